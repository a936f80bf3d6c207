"""Replicated servers in tests: their state, and what their storages hold.

The servers are asked over the wire (``replication_status``);
``same_history`` iterates two storages and lists every difference in
transactions, records and blob files -- an empty list means identical.
"""

from __future__ import annotations

import filecmp
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ZODB.blob import is_blob_record
from ZODB.FileStorage import FileStorage
from ZODB.POSException import POSKeyError

from support.waiting import wait_until
from zodbserver.peer_call import call


def file_storage(directory: Path, **options: Any) -> FileStorage:
    directory.mkdir(parents=True, exist_ok=True)
    return FileStorage(
        str(directory / "Data.fs"), blob_dir=str(directory / "blobs"), **options
    )


def replication_status(address: Any) -> dict[str, Any]:
    status: dict[str, Any] = call(address, "replication_status")
    return status


def last_tid(address: Any, name: str = "1") -> str:
    """A server's last transaction for storage ``name``, in hex."""
    return str(replication_status(address)["storages"][name]["last_tid"])


def wait_caught_up(primary: Any, replica: Any, timeout: float = 30.0) -> None:
    """Until the replica has the primary's last transaction."""
    wait_until(
        lambda: last_tid(primary) == last_tid(replica),
        "the replica to catch up",
        timeout=timeout,
    )


def _records(storage: Any) -> Iterator[tuple[Any, ...]]:
    transactions = storage.iterator()
    try:
        for transaction in transactions:
            yield (
                "transaction",
                transaction.tid,
                transaction.status,
                transaction.user,
                transaction.description,
                transaction.extension,
            )
            for record in transaction:
                yield ("record", record.oid, record.tid, record.data, record.data_txn)
    finally:
        close = getattr(transactions, "close", None)
        if close is not None:
            close()


def same_history(first: Any, second: Any) -> list[str]:
    """The differences between two storages' transactions, records and
    blob files (at most 20)."""
    differences: list[str] = []
    ours = list(_records(first))
    theirs = list(_records(second))
    if len(ours) != len(theirs):
        differences.append(f"{len(ours)} items against {len(theirs)}")
    for mine, other in zip(ours, theirs, strict=False):
        if mine != other:
            differences.append(f"{mine!r:.200} != {other!r:.200}")
        elif mine[0] == "record" and is_blob_record(mine[3]):
            differences.extend(_blob_difference(first, second, mine[1], mine[2]))
        if len(differences) >= 20:
            break
    return differences


def _blob_difference(first: Any, second: Any, oid: bytes, tid: bytes) -> list[str]:
    paths = []
    for storage in (first, second):
        try:
            paths.append(storage.loadBlob(oid, tid))
        except POSKeyError:
            paths.append(None)
    if paths[0] is None and paths[1] is None:
        return []
    if None in paths or not filecmp.cmp(paths[0], paths[1], shallow=False):
        return [f"blob {oid.hex()}@{tid.hex()}: {paths}"]
    if os.path.getsize(paths[0]) != os.path.getsize(paths[1]):  # pragma: no cover
        return [f"blob sizes differ: {paths}"]
    return []


def same_files(first: Path, second: Path) -> list[str]:
    """``same_history`` of the FileStorages (``Data.fs`` and ``blobs``) in
    two directories, opened read-only."""
    storages = [
        FileStorage(
            str(directory / "Data.fs"),
            blob_dir=str(directory / "blobs"),
            read_only=True,
        )
        for directory in (first, second)
    ]
    try:
        return same_history(*storages)
    finally:
        for storage in storages:
            storage.close()
