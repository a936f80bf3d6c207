"""Transactions bigger than the spool threshold, through a real server.

Our server runs in a thread over a FileStorage in the test's directory, with
a 64 KB ``transaction_spool_threshold``; ZEO 6's ``ClientStorage`` commits
through the storage API, so that the test can look at the storage's
directory between the stores and the vote: a transaction past the threshold
has a spool file there, and whatever ends the transaction removes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ZEO.ClientStorage import ClientStorage
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage
from ZODB.POSException import ConflictError, POSKeyError
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle
from ZODB.utils import newTid, z64

from support.waiting import wait_until
from zodbserver.server.settings import ServerSettings
from zodbserver.server.spool import FILE_PREFIX
from zodbserver.server.thread import ServerThread

THRESHOLD = 64 * 1024
#: One store this big makes a transaction spool.
PADDING = 2 * THRESHOLD

Address = tuple[str, int]
Connect = Callable[[], ClientStorage]


@pytest.fixture
def address(tmp_path: Path) -> Iterator[Address]:
    storage = FileStorage(str(tmp_path / "Data.fs"))
    settings = ServerSettings(
        address=("127.0.0.1", 0), transaction_spool_threshold=THRESHOLD
    )
    with ServerThread({"1": storage}, settings) as bound:
        assert isinstance(bound, tuple)
        yield bound


@pytest.fixture
def connect(address: Address) -> Iterator[Connect]:
    clients: list[ClientStorage] = []

    def new_client() -> ClientStorage:
        client = ClientStorage(address, wait_timeout=10)
        clients.append(client)
        return client

    yield new_client
    for client in clients:
        client.close()


@pytest.fixture
def client(connect: Connect) -> ClientStorage:
    return connect()


def spool_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{FILE_PREFIX}*"))


def begin(client: ClientStorage) -> TransactionMetaData:
    metadata = TransactionMetaData()
    client.tpc_begin(metadata)
    return metadata


def pickle_of(payload: bytes) -> bytes:
    data: bytes = zodb_pickle(MinPO(payload))
    return data


def store_new(
    client: ClientStorage, metadata: TransactionMetaData, count: int, size: int
) -> dict[bytes, bytes]:
    """Store ``count`` new objects of ``size`` random bytes: oid -> data."""
    stored = {}
    for _ in range(count):
        oid = client.new_oid()
        data = pickle_of(os.urandom(size))
        client.store(oid, z64, data, "", metadata)
        stored[oid] = data
    return stored


def commit_new(client: ClientStorage, count: int, size: int) -> dict[bytes, bytes]:
    metadata = begin(client)
    stored = store_new(client, metadata, count, size)
    client.tpc_vote(metadata)
    client.tpc_finish(metadata)
    return stored


def wait_for_spool(directory: Path) -> Path:
    """The transaction's spool file, once the server has made it (the
    stores are asynchronous calls)."""
    files = wait_until(lambda: spool_files(directory), "the transaction to spool")
    assert len(files) == 1, files
    return files[0]


def wait_for_no_spool(directory: Path) -> None:
    wait_until(lambda: not spool_files(directory), "the spool file to go")


def test_a_big_transaction_commits_every_object(
    client: ClientStorage, connect: Connect, tmp_path: Path
) -> None:
    metadata = begin(client)
    stored = store_new(client, metadata, count=500, size=10_000)  # ~5 MB
    spool = wait_for_spool(tmp_path)
    assert spool.name.startswith(".zodbserver-txn-Data.fs-")
    client.tpc_vote(metadata)
    assert spool.exists()  # until the transaction ends
    tid = client.tpc_finish(metadata)
    assert spool_files(tmp_path) == []
    reader = connect()  # an empty cache: every load is the server's
    for oid, data in stored.items():
        assert reader.load(oid) == (data, tid)


def test_a_small_transaction_has_no_spool(
    client: ClientStorage, tmp_path: Path
) -> None:
    metadata = begin(client)
    store_new(client, metadata, count=3, size=1000)
    client.tpc_vote(metadata)  # every store has arrived
    assert spool_files(tmp_path) == []
    client.tpc_finish(metadata)


def test_every_operation_kind_replays_from_the_spool(
    client: ClientStorage, connect: Connect, tmp_path: Path
) -> None:
    a, b, c = commit_new(client, count=3, size=10)
    first = client.lastTransaction()
    new_a = pickle_of(b"a, second version")

    # store, read check, delete
    metadata = begin(client)
    store_new(client, metadata, count=1, size=PADDING)
    client.store(a, first, new_a, "", metadata)
    client.checkCurrentSerialInTransaction(b, first, metadata)
    client.deleteObject(c, first, metadata)
    wait_for_spool(tmp_path)
    client.tpc_vote(metadata)
    second = client.tpc_finish(metadata)
    reader = connect()
    assert reader.load(a) == (new_a, second)
    assert reader.load(b)[1] == first
    with pytest.raises(POSKeyError):
        reader.load(c)

    # undo
    [last] = client.undoLog(0, 1)
    assert last["id"] != second  # FileStorage's undo id: not the tid itself
    metadata = begin(client)
    store_new(client, metadata, count=1, size=PADDING)
    client.undo(last["id"], metadata)
    wait_for_spool(tmp_path)
    client.tpc_vote(metadata)
    client.tpc_finish(metadata)
    reader = connect()
    assert reader.load(a)[0] != new_a
    assert reader.load(c)[0]  # the delete is undone

    # restore, in a transaction with a tid of its own
    restored_tid = newTid(client.lastTransaction())
    restored = client.new_oid()
    metadata = TransactionMetaData()
    client.tpc_begin(metadata, restored_tid, " ")
    client.restore(restored, restored_tid, pickle_of(b"restored"), "", None, metadata)
    store_new(client, metadata, count=1, size=PADDING)
    wait_for_spool(tmp_path)
    client.tpc_vote(metadata)
    client.tpc_finish(metadata)
    assert connect().load(restored) == (pickle_of(b"restored"), restored_tid)
    assert spool_files(tmp_path) == []


def test_an_abort_removes_the_spool(client: ClientStorage, tmp_path: Path) -> None:
    metadata = begin(client)
    store_new(client, metadata, count=3, size=PADDING)
    wait_for_spool(tmp_path)
    client.tpc_abort(metadata)
    assert spool_files(tmp_path) == []
    commit_new(client, count=1, size=10)  # the server carries on


def test_a_conflict_at_the_vote_removes_the_spool(
    client: ClientStorage, tmp_path: Path
) -> None:
    [oid] = commit_new(client, count=1, size=10)
    first = client.lastTransaction()
    metadata = begin(client)
    client.store(oid, first, pickle_of(b"second"), "", metadata)
    client.tpc_vote(metadata)
    client.tpc_finish(metadata)

    metadata = begin(client)
    store_new(client, metadata, count=3, size=PADDING)
    client.store(oid, first, pickle_of(b"stale"), "", metadata)
    wait_for_spool(tmp_path)
    with pytest.raises(ConflictError):
        client.tpc_vote(metadata)
    assert spool_files(tmp_path) == []
    client.tpc_abort(metadata)
    commit_new(client, count=1, size=10)


def test_a_disconnect_while_buffering_removes_the_spool(
    connect: Connect, tmp_path: Path
) -> None:
    leaving = connect()
    metadata = begin(leaving)
    store_new(leaving, metadata, count=3, size=PADDING)
    wait_for_spool(tmp_path)
    leaving.close()
    wait_for_no_spool(tmp_path)
    # What tpc_abort would do client-side: close ZEO's own buffer file.
    leaving.tpc_end(metadata)
    commit_new(connect(), count=1, size=10)


def test_a_disconnect_after_the_vote_removes_the_spool(
    connect: Connect, tmp_path: Path
) -> None:
    leaving = connect()
    metadata = begin(leaving)
    store_new(leaving, metadata, count=3, size=PADDING)
    leaving.tpc_vote(metadata)  # holds the commit lock
    assert len(spool_files(tmp_path)) == 1
    leaving.close()
    wait_for_no_spool(tmp_path)
    # What tpc_abort would do client-side: close ZEO's own buffer file.
    leaving.tpc_end(metadata)
    commit_new(connect(), count=1, size=10)  # the lock was released


def test_transactions_of_several_clients_spool_apart(
    connect: Connect, tmp_path: Path
) -> None:
    one, two = connect(), connect()
    first, second = begin(one), begin(two)
    stored_one = store_new(one, first, count=3, size=PADDING)
    stored_two = store_new(two, second, count=3, size=PADDING)
    wait_until(lambda: len(spool_files(tmp_path)) == 2, "two spool files")
    two.tpc_vote(second)
    two.tpc_finish(second)
    one.tpc_vote(first)
    one.tpc_finish(first)
    assert spool_files(tmp_path) == []
    reader = connect()
    for oid, data in {**stored_one, **stored_two}.items():
        assert reader.load(oid)[0] == data
