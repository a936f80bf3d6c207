"""Blob transfers around the read size: both ends read a file a few chunks
at a time in a thread, and a short read ends it, so sizes just under, at and
over one read (and two reads), and empty files, must all arrive whole --
uploaded and downloaded by ZEO's client and by ours."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import ZODB
from ZEO.ClientStorage import ClientStorage as ZEOClientStorage
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage

from zodbserver import ClientStorage
from zodbserver.chunks import BLOB_CHUNK_SIZE, CHUNKS_PER_READ
from zodbserver.server.thread import ServerThread

BLOB_READ_SIZE = CHUNKS_PER_READ * BLOB_CHUNK_SIZE
SIZES = [
    0,
    BLOB_CHUNK_SIZE,
    BLOB_READ_SIZE - 1,
    BLOB_READ_SIZE,
    BLOB_READ_SIZE + 1,
    2 * BLOB_READ_SIZE,
    2 * BLOB_READ_SIZE + 7,
]


@pytest.mark.parametrize(
    "client_class", [ZEOClientStorage, ClientStorage], ids=["zeo", "ours"]
)
@pytest.mark.parametrize("msgpack", [True, False], ids=["M5", "Z5"])
def test_sizes_around_the_read_size_arrive_whole(
    tmp_path: Path, msgpack: bool, client_class: type
) -> None:
    storage = FileStorage(str(tmp_path / "Data.fs"), blob_dir=str(tmp_path / "blobs"))
    expected = {size: random.Random(size).randbytes(size) for size in SIZES}
    with ServerThread({"1": storage}, msgpack=msgpack) as address:
        writer = ZODB.DB(
            client_class(address, blob_dir=str(tmp_path / "w"), wait_timeout=10)
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
            client_class(address, blob_dir=str(tmp_path / "r"), wait_timeout=10)
        )
        try:
            with reader.transaction() as connection:
                for size, data in expected.items():
                    with connection.root()[size].open("r") as file:
                        assert file.read() == data, size
        finally:
            reader.close()
