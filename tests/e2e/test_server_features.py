"""Server features seen from the outside: the ruok probe, several storages,
cache verification through the invalidation queue or a storage scan, and an
existing Data.fs written by plain ZODB."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import transaction
import ZEO
import ZODB
from persistent.mapping import PersistentMapping
from ZODB.FileStorage import FileStorage
from ZODB.MappingStorage import MappingStorage

from zodbserver.server.thread import ServerThread


def read_frame(sock: socket.socket) -> bytes:
    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            assert chunk, "connection closed early"
            data += chunk
        return data

    (size,) = struct.unpack(">I", exactly(4))
    return exactly(size)


@pytest.fixture
def data_fs(tmp_path: Path) -> str:
    return str(tmp_path / "Data.fs")


def commit(db: ZODB.DB, **values: Any) -> None:
    with db.transaction() as conn:
        conn.root().update(values)


def test_ruok_reports_every_storage_and_closes(data_fs: str) -> None:
    storages = {"1": FileStorage(data_fs), "second": MappingStorage()}
    with ServerThread(storages) as address:
        db = ZODB.DB(ZEO.client(address, wait_timeout=10))
        try:
            commit(db, x=1)
            with socket.create_connection(address, timeout=10) as sock:
                assert read_frame(sock) == b"M5"
                sock.sendall(struct.pack(">I", 4) + b"ruok")
                status = json.loads(read_frame(sock).decode("ascii"))
                assert sock.recv(1) == b""  # the server closed
            last = db.storage.lastTransaction().hex()
        finally:
            db.close()
    assert set(status) == {"1", "second"}
    assert status["1"]["last-transaction"] == last
    assert status["1"]["commits"] >= 1
    assert status["1"]["connections"] == 1
    assert status["second"]["last-transaction"] == "0" * 16
    assert status["second"]["commits"] == 0


def test_storages_are_independent(data_fs: str) -> None:
    storages = {"1": FileStorage(data_fs), "2": MappingStorage()}
    with ServerThread(storages) as address:
        one = ZODB.DB(ZEO.client(address, storage="1", wait_timeout=10))
        two = ZODB.DB(ZEO.client(address, storage="2", wait_timeout=10))
        try:
            commit(one, where="one")
            commit(two, where="two")
            with one.transaction() as conn:
                assert conn.root()["where"] == "one"
            with two.transaction() as conn:
                assert conn.root()["where"] == "two"
            assert one.storage.lastTransaction() != two.storage.lastTransaction()
        finally:
            one.close()
            two.close()


@pytest.fixture
def cached_client(tmp_path: Path) -> Iterator[Any]:
    """Opens a ZEO client with a persistent cache in tmp_path."""
    opened: list[ZODB.DB] = []

    def open_client(address: Any) -> ZODB.DB:
        storage = ZEO.client(
            address, client="cached", var=str(tmp_path), wait_timeout=10
        )
        db = ZODB.DB(storage)
        opened.append(db)
        return db

    yield open_client
    for db in opened:
        db.close()


@pytest.mark.parametrize(
    ("invalidation_age", "expected"),
    [(3600.0, "quick verification"), (None, "cache too old, clearing")],
)
def test_reconnecting_past_the_queue(
    data_fs: str, cached_client: Any, invalidation_age: float | None, expected: str
) -> None:
    server = ServerThread(
        {"1": FileStorage(data_fs)},
        invalidation_queue_size=1,
        invalidation_age=invalidation_age,
    )
    with server as address:
        db = cached_client(address)
        commit(db, value=0, other=PersistentMapping())
        with db.transaction() as conn:
            conn.root()["other"]["seen"] = True
        db.close()
        writer = ZODB.DB(ZEO.client(address, wait_timeout=10))
        try:
            for value in range(1, 4):  # more commits than the queue keeps
                commit(writer, value=value)
        finally:
            writer.close()
        db = cached_client(address)
        assert db.storage._server.client.verify_result == expected
        with db.transaction() as conn:
            assert conn.root()["value"] == 3  # never stale
            assert conn.root()["other"]["seen"] is True


def test_serves_a_data_fs_written_by_plain_zodb(data_fs: str) -> None:
    plain = ZODB.DB(FileStorage(data_fs))
    with plain.transaction() as conn:
        conn.root()["tree"] = PersistentMapping(leaf="green")
    tid = plain.storage.lastTransaction()
    plain.close()
    with ServerThread({"1": FileStorage(data_fs)}) as address:
        db = ZODB.DB(ZEO.client(address, wait_timeout=10))
        try:
            assert db.storage.lastTransaction() == tid
            with db.transaction() as conn:
                assert conn.root()["tree"]["leaf"] == "green"
                conn.root()["tree"]["leaf"] = "brown"
        finally:
            db.close()
    reopened = ZODB.DB(FileStorage(data_fs, read_only=True))
    try:
        with reopened.transaction() as conn:
            assert conn.root()["tree"]["leaf"] == "brown"
    finally:
        reopened.close()
        transaction.abort()


@pytest.mark.parametrize("msgpack", [True, False], ids=["M5", "Z5"])
def test_ping_is_a_sync_barrier_for_invalidations(data_fs: str, msgpack: bool) -> None:
    """docs/protocol.md, Ordering guarantees: once a ping is answered, every
    invalidation for a commit that finished before it has been delivered."""
    with ServerThread({"1": FileStorage(data_fs)}, msgpack=msgpack) as address:
        writer = ZODB.DB(ZEO.client(address, wait_timeout=10))
        reader = ZEO.client(address, wait_timeout=10)
        try:
            for value in range(20):
                commit(writer, value=value)
                reader.ping()
                assert reader.lastTransaction() == writer.storage.lastTransaction()
        finally:
            writer.close()
            reader.close()


def test_an_iterator_begun_before_a_pack_fails_clearly(data_fs: str) -> None:
    """A pack replaces the file an iterator reads: the iterator's next step
    says so (a copy made through it must not end early, or read the wrong
    bytes); a new iterator works."""
    import time

    from support.raw_client import RawClient
    from zodbserver.protocol import ErrorReply

    db = ZODB.DB(FileStorage(data_fs))
    for value in range(3):
        with db.transaction() as connection:
            connection.root()["x"] = value
    db.close()
    with (
        ServerThread({"1": FileStorage(data_fs)}) as address,
        RawClient(address) as client,
    ):
        client.result("register", "1", False)
        iid = client.result("iterator_start", None, None)
        assert client.result("iterator_next", iid) is not None
        assert client.result("pack", time.time()) is None
        event = client.call("iterator_next", iid)
        assert isinstance(event, ErrorReply), event
        assert event.class_name == "ZODB.POSException.StorageError"
        assert "packed since it began" in str(event.payload)
        fresh = client.result("iterator_start", None, None)
        assert client.result("iterator_next", fresh) is not None
