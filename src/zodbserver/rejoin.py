"""``zeoserver rejoin``: make a former primary fit to follow the new one.

A primary that was replaced (a replica was promoted while it was down or
cut off) may hold transactions no one else has: commits it took after the
replica's last one.  It cannot follow the new primary with them.  With the
server stopped, ``rejoin`` asks the new primary for its history
(``replication_status``), works out after which transaction the two
histories part (``replication_history.compare``), and for each FileStorage
that has transactions of its own:

1. copies them, with their blobs, into ``Data.fs.diverged-<LAST TID>`` (a
   FileStorage of its own, blobs in ``Data.fs.diverged-<LAST TID>.blobs``):
   nothing is dropped, and an operator can open it with ZODB's tools;
2. truncates ``Data.fs`` after the branch transaction and removes its
   index file (FileStorage rebuilds it when it opens).

Then the server can start with ``replicate-from`` and catch up.  Only
FileStorages can be cut back so; another storage is reported.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

from ZODB.blob import is_blob_record
from ZODB.FileStorage import FileIterator, FileStorage
from ZODB.POSException import POSKeyError
from ZODB.utils import p64, u64, z64
from zope.proxy import removeAllProxies

from .addresses import format_address
from .config import ServerConfig, close_storages, open_storages
from .errors import ConfigurationError
from .exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from .peer_call import CallFailedError, call
from .server.replication_history import Verdict, compare, from_json
from .server.replication_state import ReplicationState


def rejoin(config: ServerConfig, *, dry_run: bool = False) -> int:
    primary = config.settings.replicate_from
    if primary is None:
        print(
            "zeoserver rejoin: give the new primary: --replicate-from HOST:PORT "
            "(or replicate-from in zeo.conf)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        status = call(primary, "replication_status", seconds=30.0)
    except CallFailedError as error:
        print(f"zeoserver rejoin: {error}", file=sys.stderr)
        return EXIT_FAILURE
    storages = open_storages(config)
    plans: list[tuple[FileStorage, bytes, bytes]] = []
    try:
        for name, storage in storages.items():
            where = f"storage {name!r}"
            try:
                theirs = from_json(
                    status["storages"][name]["history"],
                    f"{format_address(primary)}'s history of {name!r}",
                )
            except (KeyError, TypeError):
                print(f"zeoserver rejoin: the primary has no {where}", file=sys.stderr)
                return EXIT_FAILURE
            ours = ReplicationState.of(storage)
            last = storage.lastTransaction() or z64
            comparison = compare(theirs, ours.history, last)
            if comparison.verdict is Verdict.PRIMARY_STALE:
                print(
                    f"zeoserver rejoin: {where}: {format_address(primary)} is "
                    "older than this server (it knows of no promotion this one "
                    "knows of); not rejoining it",
                    file=sys.stderr,
                )
                return EXIT_FAILURE
            if comparison.verdict is Verdict.FOLLOW:
                print(f"{where}: nothing of its own after the primary's history")
                continue
            assert comparison.branch is not None
            file_storage = removeAllProxies(storage)
            if not isinstance(file_storage, FileStorage):
                print(
                    f"zeoserver rejoin: {where}: only a FileStorage can be cut "
                    f"back; it has transactions after {comparison.branch.hex()}",
                    file=sys.stderr,
                )
                return EXIT_FAILURE
            plans.append((file_storage, comparison.branch, last))
            print(
                f"{where}: transactions after {comparison.branch.hex()} up to "
                f"{last.hex()} are its own"
                + ("" if dry_run else f"; moving them to {_aside(file_storage, last)}")
            )
        if dry_run:
            return EXIT_OK
        for file_storage, branch, last in plans:
            _copy_aside(file_storage, branch, last)
    except ConfigurationError as error:
        print(f"zeoserver rejoin: {error}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        close_storages(storages)
    for file_storage, branch, _ in plans:
        _truncate_after(file_storage._file_name, branch)
    return EXIT_OK


def _aside(storage: FileStorage, last: bytes) -> str:
    return f"{storage._file_name}.diverged-{last.hex()}"


def _copy_aside(storage: FileStorage, branch: bytes, last: bytes) -> None:
    """Copy the transactions after ``branch`` into their own FileStorage;
    their blob files move there."""
    path = _aside(storage, last)
    blob_dir = f"{path}.blobs" if storage.blob_dir else None
    aside = FileStorage(path, create=True, blob_dir=blob_dir)
    try:
        transactions = storage.iterator(p64(u64(branch) + 1))
        for transaction in _closing(transactions):
            aside.tpc_begin(transaction, transaction.tid, transaction.status)
            for record in transaction:
                blob = None
                if blob_dir and is_blob_record(record.data):
                    try:
                        blob = storage.loadBlob(record.oid, record.tid)
                    except POSKeyError:
                        blob = None
                if blob is None:
                    aside.restore(
                        record.oid,
                        record.tid,
                        record.data,
                        "",
                        record.data_txn,
                        transaction,
                    )
                else:
                    aside.restoreBlob(
                        record.oid,
                        record.tid,
                        record.data,
                        blob,
                        record.data_txn,
                        transaction,
                    )
            aside.tpc_vote(transaction)
            aside.tpc_finish(transaction)
    finally:
        aside.close()


def _closing(transactions: Any) -> Iterator[Any]:
    try:
        yield from transactions
    finally:
        close = getattr(transactions, "close", None)
        if close is not None:
            close()


def _truncate_after(path: str, branch: bytes) -> None:
    """Cut ``path`` (a closed FileStorage) after transaction ``branch``."""
    transactions = FileIterator(path, p64(u64(branch) + 1))
    try:
        first = next(iter(transactions), None)
        position = None if first is None else first._tpos
    finally:
        transactions.close()
    if position is None:
        return
    with open(path, "r+b") as stream:
        stream.truncate(position)
        stream.flush()
        os.fsync(stream.fileno())
    for stale in (f"{path}.index", f"{path}.tmp"):
        if os.path.exists(stale):
            os.remove(stale)
