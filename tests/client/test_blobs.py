"""Blobs through the client: the private cache and the shared directory."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import transaction
import ZODB
import ZODB.interfaces
from ZODB import POSException
from ZODB.blob import Blob
from ZODB.utils import p64

from zodbserver.client import ClientStorage
from zodbserver.client.blobs import BlobFiles

from .conftest import ServerHandle
from .servers import wait_for_commit


@pytest.fixture
def blob_server(
    start_blob_server: Callable[..., ServerHandle], tmp_path: Any
) -> ServerHandle:
    return start_blob_server(blob_dir=str(tmp_path / "server-blobs"))


@pytest.fixture
def open_db(blob_server: ServerHandle) -> Iterator[Callable[..., ZODB.DB]]:
    dbs: list[ZODB.DB] = []

    def open_db(blob_dir: str, **options: Any) -> ZODB.DB:
        storage = ClientStorage(
            blob_server.addr, blob_dir=blob_dir, wait_timeout=10, **options
        )
        db = ZODB.DB(storage)
        dbs.append(db)
        return db

    yield open_db
    for db in dbs:
        db.close()


def _write_then_read(writer: ZODB.DB, reader: ZODB.DB, payload: bytes) -> bytes:
    tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
    conn1, conn2 = writer.open(tm1), reader.open(tm2)
    try:
        blob = Blob()
        with blob.open("w") as file:
            file.write(payload)
        conn1.root()["blob"] = blob
        tm1.commit()
        wait_for_commit(writer.storage, reader.storage)
        tm2.begin()
        with conn2.root()["blob"].open() as file:
            data: bytes = file.read()
        return data
    finally:
        conn1.close()
        conn2.close()


def test_private_blob_caches_upload_and_download(
    open_db: Callable[..., ZODB.DB], tmp_path: Any
) -> None:
    payload = os.urandom(150_000)  # three chunks each way
    writer = open_db(str(tmp_path / "cache-w"), server_sync=True)
    reader = open_db(str(tmp_path / "cache-r"), server_sync=True)
    assert ZODB.interfaces.IBlobStorage.providedBy(writer.storage)
    assert _write_then_read(writer, reader, payload) == payload

    def cached_files(root: Any) -> list[str]:
        return [
            name
            for _, _, names in os.walk(root)
            for name in names
            if name.endswith(".blob")
        ]

    assert len(cached_files(tmp_path / "cache-w")) == 1  # kept from the commit
    assert len(cached_files(tmp_path / "cache-r")) == 1  # downloaded
    assert cached_files(tmp_path / "cache-r") == cached_files(tmp_path / "cache-w")


def test_shared_blob_directory(
    open_db: Callable[..., ZODB.DB], blob_server: ServerHandle, tmp_path: Any
) -> None:
    shared = str(tmp_path / "server-blobs")
    writer = open_db(shared, shared_blob_dir=True, server_sync=True)
    reader = open_db(shared, shared_blob_dir=True, server_sync=True)
    assert _write_then_read(writer, reader, b"shared bytes") == b"shared bytes"


def test_missing_blob_is_a_poskeyerror(
    open_db: Callable[..., ZODB.DB], tmp_path: Any
) -> None:
    storage = open_db(str(tmp_path / "cache")).storage
    with pytest.raises(POSException.POSKeyError):
        storage.loadBlob(p64(99), p64(1))


def test_no_blob_dir_means_unsupported(blob_server: ServerHandle) -> None:
    storage = ClientStorage(blob_server.addr, wait_timeout=10)
    try:
        assert not ZODB.interfaces.IBlobStorage.providedBy(storage)
        with pytest.raises(POSException.Unsupported):
            storage.loadBlob(p64(1), p64(1))
    finally:
        storage.close()


def test_blob_cache_size_limit_prunes_least_recently_used(tmp_path: Any) -> None:
    files = BlobFiles(str(tmp_path / "cache"), cache_size=250, size_check=10)
    for n in range(1, 6):
        oid, tid = p64(n), p64(100 + n)
        files.helper.createPathForOID(oid)
        files.receive_start(oid, tid)
        files.receive_chunk(oid, tid, bytes(100))
        files.receive_stop(oid, tid)
        os.utime(files.filename(oid, tid), (n, n))  # older files first
        files.downloaded()
    remaining = [n for n in range(1, 6) if files.cached(p64(n), p64(100 + n))]
    assert remaining == [4, 5]  # pruned to at most 225 bytes, newest kept
