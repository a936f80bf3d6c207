"""Our client against a live server: reads, commits, and two clients at once."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from typing import Any

import pytest
import transaction
import ZODB
import ZODB.interfaces
from BTrees.Length import Length
from persistent.mapping import PersistentMapping
from ZODB import POSException
from ZODB.Connection import TransactionMetaData
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle, zodb_unpickle
from ZODB.utils import p64, u64, z64

from zodbserver.client import ClientDisconnected, ClientStorage

from .conftest import ServerHandle
from .servers import wait_for_commit

MakeClient = Callable[..., ClientStorage]


class RecordingDB:
    """Stands in for ZODB.DB: records invalidations, lets tests wait for them."""

    def __init__(self) -> None:
        self.invalidations: list[tuple[bytes, list[bytes]]] = []
        self.cache_invalidations = 0
        self._changed = threading.Condition()

    def invalidate(self, tid: bytes, oids: list[bytes]) -> None:
        with self._changed:
            self.invalidations.append((tid, list(oids)))
            self._changed.notify_all()

    def invalidateCache(self) -> None:
        with self._changed:
            self.cache_invalidations += 1
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def transform_record_data(self, data: bytes) -> bytes:
        return data

    untransform_record_data = transform_record_data


def store(client: ClientStorage, oid: bytes, serial: bytes, value: Any) -> bytes:
    txn = TransactionMetaData()
    client.tpc_begin(txn)
    client.store(oid, serial, zodb_pickle(MinPO(value)), "", txn)
    client.tpc_vote(txn)
    return client.tpc_finish(txn)


def test_connects_and_reports_the_server(make_client: MakeClient) -> None:
    client = make_client()
    assert client.is_connected()
    assert "connected" in client.getName()
    assert client.lastTransaction() == z64
    assert client.protocol_version in (b"M5", b"Z5")
    assert client.supportsUndo()
    assert not client.isReadOnly()
    assert client.sortKey().startswith("1:")
    assert client.server_status()["connections"] >= 1
    assert client.ping() is None


def test_new_oids_are_distinct_and_batched(make_client: MakeClient) -> None:
    client = make_client()
    oids = [client.new_oid() for _ in range(150)]
    assert len(set(oids)) == 150
    assert sorted(oids) == oids


def test_next_oid_batch_is_asked_for_early(make_client: MakeClient) -> None:
    client = make_client()
    taken = [client.new_oid() for _ in range(51)]  # 49 of 100 left: ask
    client.ping()  # the early request was sent before the ping
    spare = len(client._oids)
    assert spare == 149
    rest = [client.new_oid() for _ in range(spare)]
    assert len(set(taken + rest)) == 200


def test_commit_updates_cache_last_transaction_and_info(
    make_client: MakeClient,
) -> None:
    client = make_client()
    size = client.getSize()
    oid = client.new_oid()
    seen: list[bytes] = []
    txn = TransactionMetaData()
    client.tpc_begin(txn)
    client.store(oid, z64, zodb_pickle(MinPO(1)), "", txn)
    assert client.tpc_vote(txn) is None

    def callback(tid: bytes) -> None:
        seen.append(client.lastTransaction())
        seen.append(tid)

    tid = client.tpc_finish(txn, callback)
    assert seen == [tid, tid]  # lastTransaction moved before the callback ran
    assert client.lastTransaction() == tid
    assert client._cache.load(oid) == (zodb_pickle(MinPO(1)), tid)
    assert client.getSize() > size
    assert client.loadSerial(oid, tid) == zodb_pickle(MinPO(1))
    assert [entry["tid"] for entry in client.history(oid, 5)] == [tid]


def test_loads_of_unknown_oids_raise_poskeyerror(make_client: MakeClient) -> None:
    client = make_client()
    with pytest.raises(POSException.POSKeyError):
        client.load(p64(12345))


def test_second_client_sees_commit_through_invalidation(
    make_client: MakeClient,
) -> None:
    writer, reader = make_client(), make_client()
    db = RecordingDB()
    reader.registerDB(db)
    oid = writer.new_oid()
    first = store(writer, oid, z64, "first")
    # ZEO 6's threaded test server may answer a ping before it sends the
    # invalidation (ours may not: tests/e2e/test_server_features.py).
    wait_for_commit(writer, reader)
    assert reader.lastTransaction() == first
    assert zodb_unpickle(reader.load(oid)[0]) == MinPO("first")

    second = store(writer, oid, first, "second")
    assert db.wait_for(lambda: any(tid == second for tid, _ in db.invalidations))
    assert (second, [oid]) in db.invalidations
    assert reader.lastTransaction() == second
    data, serial = reader.load(oid)
    assert serial == second
    assert zodb_unpickle(data) == MinPO("second")
    # MVCC: the old snapshot is still answered, now from the cache.
    before = p64(u64(second))
    assert reader.loadBefore(oid, before) == (
        zodb_pickle(MinPO("first")),
        first,
        second,
    )
    assert writer.lastTransaction() == second


def test_committer_gets_no_invalidation_for_its_own_commit(
    make_client: MakeClient,
) -> None:
    client = make_client()
    db = RecordingDB()
    client.registerDB(db)
    store(client, client.new_oid(), z64, 1)
    client.ping()
    assert db.invalidations == []


def test_conflicting_commits_raise_conflict_error(make_client: MakeClient) -> None:
    first, second = make_client(), make_client()
    oid = first.new_oid()
    start = store(first, oid, z64, 0)
    store(first, oid, start, 1)
    with pytest.raises(POSException.ConflictError):
        store(second, oid, start, 2)  # based on the replaced revision
    second.ping()
    assert zodb_unpickle(second.load(oid)[0]) == MinPO(1)


def test_two_zodb_databases_share_state(make_client: MakeClient) -> None:
    db1 = ZODB.DB(make_client())
    db2 = ZODB.DB(make_client(server_sync=True))
    try:
        tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
        conn1, conn2 = db1.open(tm1), db2.open(tm2)
        conn1.root()["m"] = PersistentMapping(a=1)
        tm1.commit()
        wait_for_commit(db1.storage, db2.storage)
        tm2.begin()
        assert conn2.root()["m"]["a"] == 1

        conn2.root()["m"]["a"] = 2
        conn1.root()["m"]["a"] = 3
        tm2.commit()
        with pytest.raises(POSException.ConflictError):
            tm1.commit()
        tm1.abort()
        tm1.begin()
        assert conn1.root()["m"]["a"] == 2
        conn1.close()
        conn2.close()
    finally:
        db1.close()
        db2.close()


def _concurrent_increments(make_client: MakeClient) -> int:
    db1 = ZODB.DB(make_client(server_sync=True))
    db2 = ZODB.DB(make_client(server_sync=True))
    try:
        tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
        conn1, conn2 = db1.open(tm1), db2.open(tm2)
        conn1.root()["n"] = Length()
        tm1.commit()
        wait_for_commit(db1.storage, db2.storage)
        tm2.begin()
        conn2.root()["n"].change(5)  # both start from 0...
        conn1.root()["n"].change(1)
        tm1.commit()
        tm2.commit()  # ...and the conflict is resolved, not raised
        wait_for_commit(db2.storage, db1.storage)
        tm1.begin()
        tm2.begin()
        value = conn1.root()["n"]()
        assert conn2.root()["n"]() == value
        conn1.close()
        conn2.close()
        return int(value)
    finally:
        db1.close()
        db2.close()


def test_server_side_conflict_resolution(make_client: MakeClient) -> None:
    assert _concurrent_increments(make_client) == 6


def test_client_side_conflict_resolution(
    start_server: Callable[..., ServerHandle],
) -> None:
    server = start_server(client_conflict_resolution=True)
    clients: list[ClientStorage] = []

    def make(**options: Any) -> ClientStorage:
        client = ClientStorage(server.addr, wait_timeout=10, **options)
        clients.append(client)
        return client

    assert _concurrent_increments(make) == 6


def test_undo_log_and_undo(make_client: MakeClient) -> None:
    client = make_client()
    oid = client.new_oid()
    first = store(client, oid, z64, 1)
    second = store(client, oid, first, 2)
    log = client.undoLog(0, 10)
    assert [base64.b64decode(entry["id"]) for entry in log][:2] == [second, first]
    txn = TransactionMetaData()
    client.tpc_begin(txn)
    client.undo(log[0]["id"], txn)
    assert client.tpc_vote(txn) == [oid]
    undo_tid = client.tpc_finish(txn)
    data, serial = client.load(oid)
    assert serial == undo_tid
    assert zodb_unpickle(data) == MinPO(1)


def test_many_threads_share_one_client(make_client: MakeClient) -> None:
    client = make_client()
    oids = [client.new_oid() for _ in range(8)]
    serials = {oid: store(client, oid, z64, 0) for oid in oids}
    errors: list[BaseException] = []

    def work(oid: bytes) -> None:
        try:
            serial = serials[oid]
            for value in range(1, 6):
                serial = store(client, oid, serial, value)
                assert client.load(oid) == (zodb_pickle(MinPO(value)), serial)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(oid,)) for oid in oids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert all(zodb_unpickle(client.load(oid)[0]) == MinPO(5) for oid in oids)


def test_record_iternext_walks_current_records(make_client: MakeClient) -> None:
    client = make_client()
    oids = [client.new_oid() for _ in range(3)]
    for oid in oids:
        store(client, oid, z64, u64(oid))
    seen = []
    cursor = None
    while True:
        oid, _tid, _data, cursor = client.record_iternext(cursor)
        seen.append(oid)
        if cursor is None:
            break
    assert set(oids) <= set(seen)


def test_prefetch_fills_the_cache(make_client: MakeClient) -> None:
    writer, reader = make_client(), make_client()
    oids = [writer.new_oid() for _ in range(3)]
    for oid in oids:
        store(writer, oid, z64, 1)
    wait_for_commit(writer, reader)
    before = p64(u64(reader.lastTransaction()) + 1)
    reader.prefetch(oids, before)
    reader.ping()  # the prefetch's loads were sent before the ping
    assert all(reader._cache.load_before(oid, before) for oid in oids)


def test_close_is_idempotent_and_later_calls_fail(make_client: MakeClient) -> None:
    client = make_client()
    client.close()
    client.close()
    with pytest.raises(ClientDisconnected):
        client.ping()
    with pytest.raises(ClientDisconnected):
        client.load(z64)


def test_provides_the_interfaces_the_server_announces(make_client: MakeClient) -> None:
    from zope.interface.verify import verifyObject

    client = make_client()
    for iface in (
        ZODB.interfaces.IStorage,
        ZODB.interfaces.IMultiCommitStorage,
        ZODB.interfaces.IStorageIteration,
        ZODB.interfaces.IStorageUndoable,
        ZODB.interfaces.IStorageRestoreable,
        ZODB.interfaces.IStorageCurrentRecordIteration,
        ZODB.interfaces.IExternalGC,
    ):
        assert iface.providedBy(client), iface
        assert verifyObject(iface, client)


def test_new_oids_from_many_threads_are_distinct(make_client: MakeClient) -> None:
    client = make_client()
    taken: list[list[bytes]] = [[] for _ in range(8)]

    def take(mine: list[bytes]) -> None:
        for _ in range(300):
            mine.append(client.new_oid())

    threads = [threading.Thread(target=take, args=(mine,)) for mine in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    oids = [oid for mine in taken for oid in mine]
    assert len(oids) == 2400
    assert len(set(oids)) == 2400
