"""Blob downloads around the server's read size: the file is read a few
chunks at a time in a thread, and a short read ends it, so sizes just under,
at and over one read (and two reads) must all arrive whole."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import ZODB
from ZEO.ClientStorage import ClientStorage as ZEOClientStorage
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage

from zodbserver.server.thread import ServerThread
from zodbserver.server.transport import BLOB_READ_SIZE

SIZES = [
    BLOB_READ_SIZE - 1,
    BLOB_READ_SIZE,
    BLOB_READ_SIZE + 1,
    2 * BLOB_READ_SIZE,
    2 * BLOB_READ_SIZE + 7,
]


@pytest.mark.parametrize("msgpack", [True, False], ids=["M5", "Z5"])
def test_sizes_around_the_read_size_arrive_whole(tmp_path: Path, msgpack: bool) -> None:
    storage = FileStorage(str(tmp_path / "Data.fs"), blob_dir=str(tmp_path / "blobs"))
    expected = {size: random.Random(size).randbytes(size) for size in SIZES}
    with ServerThread({"1": storage}, msgpack=msgpack) as address:
        writer = ZODB.DB(
            ZEOClientStorage(address, blob_dir=str(tmp_path / "w"), wait_timeout=10)
        )
        try:
            with writer.transaction() as connection:
                for size, data in expected.items():
                    blob = Blob()
                    with blob.open("w") as file:
                        file.write(data)
                    connection.root()[size] = blob
        finally:
            writer.close()
        reader = ZODB.DB(
            ZEOClientStorage(address, blob_dir=str(tmp_path / "r"), wait_timeout=10)
        )
        try:
            with reader.transaction() as connection:
                for size, data in expected.items():
                    with connection.root()[size].open("r") as file:
                        assert file.read() == data, size
        finally:
            reader.close()
