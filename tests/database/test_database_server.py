"""Our servers on RelStorage over a real PostgreSQL: one and several."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg2
import pytest
import transaction
import ZODB
from BTrees.Length import Length
from persistent.mapping import PersistentMapping
from ZODB.blob import Blob
from ZODB.POSException import ConflictError
from ZODB.utils import z64

from support.database import RelStorageServers
from support.waiting import wait_until

WRITERS = 8
INCREMENTS = 25


def _commit_root(db: Any, **items: Any) -> None:
    with db.transaction() as connection:
        connection.root().update(items)


def _increment_counters(
    dbs: list[Any], increments: int, errors: list[BaseException]
) -> list[int]:
    """Each writer adds 1 to its own counter and to a shared one
    ``increments`` times; the commits each made.  The shared counter is a
    ``BTrees.Length``, whose conflicts the server resolves."""
    made = [0] * len(dbs)

    def write(index: int) -> None:
        manager = transaction.TransactionManager()
        connection = dbs[index].open(manager)
        try:
            for _ in range(increments):
                for attempt in manager.attempts(50):
                    with attempt:
                        root = connection.root()
                        root["shared"].change(1)
                        root["own"][index]["n"] += 1
                made[index] += 1
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(dbs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return made


def _sync(dbs: list[Any]) -> None:
    """Have each client's server publish what the others committed."""
    for db in dbs:
        db.storage.ping()


def _set_up_counters(db: Any) -> None:
    with db.transaction() as connection:
        root = connection.root()
        root["shared"] = Length()
        root["own"] = [PersistentMapping(n=0) for _ in range(WRITERS)]


def _read_counters(db: Any) -> tuple[int, list[int]]:
    with db.transaction() as connection:
        root = connection.root()
        return root["shared"](), [own["n"] for own in root["own"]]


def test_eight_writers_through_one_server_lose_no_update(
    servers: RelStorageServers,
) -> None:
    address = servers.start()
    dbs = [servers.db(address) for _ in range(WRITERS)]
    _set_up_counters(dbs[0])
    _sync(dbs)  # each client has had the invalidation of the root
    errors: list[BaseException] = []
    made = _increment_counters(dbs, INCREMENTS, errors)
    assert errors == []
    assert made == [INCREMENTS] * WRITERS
    reader = servers.db(address)
    shared, own = _read_counters(reader)
    assert shared == WRITERS * INCREMENTS
    assert own == [INCREMENTS] * WRITERS


@pytest.mark.parametrize("count", [2, 3])
def test_a_commit_through_one_server_reaches_the_clients_of_the_others(
    servers: RelStorageServers, count: int
) -> None:
    addresses = [servers.start() for _ in range(count)]
    writer = servers.db(addresses[0])
    readers = [servers.db(address) for address in addresses[1:]]
    managers = [transaction.TransactionManager() for _ in readers]
    connections = [
        reader.open(manager) for reader, manager in zip(readers, managers, strict=True)
    ]
    for connection in connections:
        assert "x" not in connection.root()
    _commit_root(writer, x=1)
    committed = writer.storage.lastTransaction()
    for reader, manager, connection in zip(readers, managers, connections, strict=True):
        # Pushed, not polled by the client: it only waits.
        wait_until(
            lambda reader=reader: reader.storage.lastTransaction() >= committed,
            "the invalidation from the other server",
        )
        manager.begin()
        assert connection.root()["x"] == 1
        connection.close()


def test_a_client_that_syncs_sees_what_another_process_committed(
    servers: RelStorageServers,
) -> None:
    """A commit the server is not told of (a RelStorage process's, which
    sends no commit notice) with a long poll interval: only the sync can
    make the client current in time."""
    server = servers.start(database_poll_interval=3600)
    reader_storage = servers.client(server, server_sync=True)
    assert reader_storage.lastTransaction() == z64
    writer = ZODB.DB(servers.storage("direct"))
    try:
        _commit_root(writer, x=2)
        committed = writer.storage.lastTransaction()
    finally:
        writer.close()
    time.sleep(0.2)
    assert reader_storage.lastTransaction() < committed
    reader_storage.sync()
    assert reader_storage.lastTransaction() >= committed


def test_eight_writers_through_two_servers_lose_no_update(
    servers: RelStorageServers,
) -> None:
    addresses = [servers.start(), servers.start()]
    dbs = [servers.db(addresses[i % 2]) for i in range(WRITERS)]
    _set_up_counters(dbs[0])
    _sync(dbs)
    errors: list[BaseException] = []
    made = _increment_counters(dbs, INCREMENTS, errors)
    assert errors == []
    assert made == [INCREMENTS] * WRITERS
    for address in addresses:
        shared, own = _read_counters(servers.db(address))
        assert shared == WRITERS * INCREMENTS
        assert own == [INCREMENTS] * WRITERS


def test_conflicting_commits_through_two_servers(servers: RelStorageServers) -> None:
    first, second = servers.start(), servers.start()
    one, two = servers.db(first), servers.db(second)
    _commit_root(one, value=PersistentMapping(n=0))
    wait_until(
        lambda: two.storage.lastTransaction() >= one.storage.lastTransaction(),
        "the set-up commit at the second server",
    )
    manager_one, manager_two = (transaction.TransactionManager() for _ in "12")
    connection_one, connection_two = one.open(manager_one), two.open(manager_two)
    connection_one.root()["value"]["n"] = 1
    connection_two.root()["value"]["n"] = 2
    manager_one.commit()
    try:
        manager_two.commit()
    except ConflictError:
        manager_two.abort()
        outcome = "refused"
    else:
        outcome = "committed"
    assert outcome == "refused"
    for db in (one, two):
        manager = transaction.TransactionManager()
        connection = db.open(manager)
        connection.sync()
        assert connection.root()["value"]["n"] == 1
        connection.close()
    connection_one.close()
    connection_two.close()


def test_a_blob_committed_through_one_server_is_read_through_another(
    servers: RelStorageServers,
) -> None:
    first, second = servers.start(), servers.start()
    writer, reader = servers.db(first), servers.db(second)
    data = bytes(range(256)) * 4000
    with writer.transaction() as connection:
        blob = Blob()
        with blob.open("w") as file:
            file.write(data)
        connection.root()["blob"] = blob
    committed = writer.storage.lastTransaction()
    wait_until(
        lambda: reader.storage.lastTransaction() >= committed,
        "the blob commit at the second server",
    )
    with reader.transaction() as connection, connection.root()["blob"].open() as file:
        assert file.read() == data


def test_invalidations_arrive_in_tid_order_while_two_servers_commit(
    servers: RelStorageServers,
) -> None:
    first, second = servers.start(), servers.start()
    seen: list[bytes] = []

    class Listener:
        def invalidate(self, tid: bytes, oids: Any) -> None:
            seen.append(tid)

        def invalidateCache(self) -> None:
            seen.append(b"all")

        def transform_record_data(self, data: bytes) -> bytes:
            return data

        untransform_record_data = transform_record_data

    listening = servers.client(first)
    listening.registerDB(Listener())
    dbs = [servers.db(first), servers.db(second), servers.db(second)]
    _set_up_counters(dbs[0])
    _sync(dbs)
    errors: list[BaseException] = []
    _increment_counters(dbs, 15, errors)
    assert errors == []
    last = dbs[1].storage.lastTransaction()
    listening.sync()
    wait_until(lambda: seen and seen[-1] >= last, "the last invalidation")
    assert b"all" not in seen
    assert seen == sorted(set(seen))


def test_pack_and_undo_through_one_server_while_another_serves(
    hp_servers: RelStorageServers,
) -> None:
    first, second = hp_servers.start(), hp_servers.start()
    admin, user = hp_servers.db(first), hp_servers.db(second)
    _set_up_counters(user)
    errors: list[BaseException] = []
    writing = threading.Thread(
        target=_increment_counters, args=([user, user], 20, errors)
    )
    writing.start()
    admin.storage.ping()
    admin.pack(time.time())
    writing.join(120)
    assert errors == []
    # Undo the last transaction through the first server.
    last = admin.undoLog(0, 1)[0]
    shared_before, _ = _read_counters(user)
    manager = transaction.TransactionManager()
    admin.undo(last["id"], manager.get())
    manager.commit()
    user.storage.ping()
    shared_after, own = _read_counters(user)
    assert shared_after == shared_before - 1
    assert sum(own) == 2 * 20 - 1


def test_a_server_wakes_the_others_when_it_commits(servers: RelStorageServers) -> None:
    # No polling to speak of: only the commit notice can bring the news.
    first = servers.start(database_poll_interval=3600)
    second = servers.start(database_poll_interval=3600)
    writer, reader = servers.db(first), servers.db(second)
    for value in range(3):
        _commit_root(writer, x=value)
        committed = writer.storage.lastTransaction()
        wait_until(
            lambda committed=committed: reader.storage.lastTransaction() >= committed,
            "the second server to publish the first one's commit",
        )


def _sessions(servers: RelStorageServers) -> int:
    """The database sessions open on the servers' database now."""
    connection = psycopg2.connect(servers.postgres.dsn("postgres"))
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                (servers.database,),
            )
            (count,) = cursor.fetchone()
        return int(count)
    finally:
        connection.close()


def test_worker_threads_bound_the_database_sessions_of_reads(
    hp_servers: RelStorageServers,
) -> None:
    """Twelve clients reading at once through a server with two worker
    threads: two reader sessions, besides the feed, the notices and the
    commit instance (docs/database.md, Sizing connections)."""
    servers = hp_servers
    address = servers.start(worker_threads=2)
    writer = servers.db(address)
    _commit_root(writer, objects=[PersistentMapping(n=n) for n in range(300)])
    readers = [servers.client(address, cache_size=0) for _ in range(12)]
    oids = [obj._p_oid for obj in writer.open().root()["objects"]]
    most = [0]
    reading = threading.Event()

    def sample() -> None:
        while reading.is_set():
            most[0] = max(most[0], _sessions(servers))
            time.sleep(0.02)

    def read(client: Any) -> None:
        for oid in oids:
            client.load(oid)

    reading.set()
    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=read, args=(c,)) for c in readers]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        reading.clear()
        sampler.join()
    # feed 1, notices 2, commit instance 2, readers 2
    assert 0 < most[0] <= 7, most[0]
