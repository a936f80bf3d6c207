"""The seed database every system starts from, and the objects it holds.

One FileStorage is built in-process and copied (Data.fs, its index and the
blob directory) to each server and to the in-process floor, so every system
starts from byte-identical data.  The root holds:

``objects``   a PersistentMapping of ``count`` objects (read and update)
``restart``   a PersistentMapping of ``restart_count`` objects (persistent cache)
``counters``  one small object per commit worker (no write conflicts)
``adds``, ``blob_writes``  where the add and blob-write workloads put theirs
``blob_<size>``  one blob of each size the blob-read workloads read

Every object is a PersistentMapping ``{"payload": bytes}`` whose pickle is
about 570 bytes, as zodbshootout's ``-s 180``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage

#: Payload length giving a ~570-byte record for ``PersistentMapping``.
PAYLOAD_BYTES = 484
#: Objects committed per transaction while seeding (bounds memory).
SEED_BATCH = 2000


def payload() -> bytes:
    return os.urandom(PAYLOAD_BYTES)


def new_object() -> PersistentMapping:
    return PersistentMapping({"payload": payload()})


@dataclass(frozen=True)
class Seed:
    """Where the seed database is and what it holds."""

    path: str
    blob_dir: str
    count: int
    restart_count: int
    workers: int
    blob_sizes: tuple[int, ...]


def build_seed(
    directory: str,
    *,
    count: int,
    restart_count: int,
    workers: int,
    blob_sizes: tuple[int, ...],
) -> Seed:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "Data.fs")
    blob_dir = os.path.join(directory, "blobs")
    db = ZODB.DB(FileStorage(path, blob_dir=blob_dir))
    try:
        manager = transaction.TransactionManager()
        conn = db.open(transaction_manager=manager)
        root = conn.root()
        root["adds"] = PersistentMapping()
        root["blob_writes"] = PersistentMapping()
        root["counters"] = PersistentMapping(
            {index: PersistentMapping({"n": 0}) for index in range(workers)}
        )
        for name, total in (("objects", count), ("restart", restart_count)):
            container = root[name] = PersistentMapping()
            for start in range(0, total, SEED_BATCH):
                for index in range(start, min(total, start + SEED_BATCH)):
                    container[index] = new_object()
                manager.commit()
                conn.cacheMinimize()
        for size in blob_sizes:
            blob = Blob()
            with blob.open("w") as file:
                write_random(file, size)
            root[blob_key(size)] = blob
            manager.commit()
        manager.commit()  # the containers, when they are empty
        conn.close()
    finally:
        db.close()
    return Seed(path, blob_dir, count, restart_count, workers, blob_sizes)


def copy_seed(seed: Seed, directory: str) -> tuple[str, str]:
    """A private copy of the seed database: ``(Data.fs path, blob dir)``."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "Data.fs")
    shutil.copyfile(seed.path, path)
    shutil.copyfile(seed.path + ".index", path + ".index")
    blob_dir = os.path.join(directory, "blobs")
    shutil.copytree(seed.blob_dir, blob_dir)
    return path, blob_dir


def blob_key(size: int) -> str:
    return f"blob_{size}"


def write_random(file: object, size: int, chunk: int = 1 << 20) -> None:
    block = os.urandom(min(size, chunk))
    written = 0
    while written < size:
        piece = block[: size - written]
        file.write(piece)  # type: ignore[attr-defined]
        written += len(piece)
