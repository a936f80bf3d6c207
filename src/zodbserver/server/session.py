"""One connected client: its registration, reads, and administration.

``Session`` is what the wire methods act on (``methods.METHODS``): the
calls of its transaction come from ``TransactionCalls``, its state from
``SessionBase``; this module adds registration, loads, iteration, pack and
undo logs, and what happens when the connection ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from ZODB.POSException import POSError, ReadOnlyError, StorageError
from ZODB.serialize import referencesf
from ZODB.TimeStamp import TimeStamp
from ZODB.utils import p64, u64

from .access import Access
from .blobs import blob_storage
from .replication_calls import ReplicationCalls
from .status import SessionStatus
from .storage_api import (
    DataRecord,
    LoadResult,
    RecordIteration,
    ServedStorage,
    TransactionRecord,
)
from .storage_server import HostedStorage, StorageInfo
from .tasks import Later
from .transaction_calls import TransactionCalls

logger = logging.getLogger(__name__)

MAX_NEW_OIDS = 100

T = TypeVar("T")

#: ``iterator_next``'s answer: ``(tid, status, user, description, extension)``.
TransactionHeader = tuple[bytes, str, bytes, bytes, dict[str, Any]]
#: ``iterator_record_next``'s answer: ``(oid, tid, data, data_txn)``.
RecordHeader = tuple[bytes, bytes, bytes | None, bytes | None]


class Session(TransactionCalls, ReplicationCalls):
    """The server side of one client connection."""

    #: ``register`` waits for the storage to be current before it joins.
    _joining = False

    # -- connection -------------------------------------------------------

    def register(self, storage_name: str, read_only: bool) -> bytes | Later[bytes]:
        if self.hosted is not None or self._joining:
            raise ValueError("duplicate register() call")
        hosted = self.server.hosted.get(storage_name)
        if hosted is None:
            raise ValueError(f"unknown storage: {storage_name}")
        self.access = self._granted(storage_name)
        if not read_only and (self.read_only or hosted.read_only):
            self.wanted_write = True
            raise ReadOnlyError()
        # A client the rules let read only is served as by a read-only
        # storage: it registers, and its commits fail with ReadOnlyError.
        self.read_only = (
            self.read_only
            or bool(read_only)
            or hosted.read_only
            or self.access < Access.WRITE
        )
        if hosted.mvcc is not None:
            # It may come from another server on the same database, having
            # seen commits this server has not published yet.
            self._joining = True
            return Later(self._join_when_current(hosted, storage_name))
        return self._join(hosted, storage_name)

    async def _join_when_current(
        self, hosted: HostedStorage, storage_name: str
    ) -> bytes:
        try:
            await hosted.catch_up()
        finally:
            self._joining = False
        return self._join(hosted, storage_name)

    def _join(self, hosted: HostedStorage, storage_name: str) -> bytes:
        self.hosted = hosted
        hosted.sessions.add(self)
        self.last_tid = hosted.last_tid
        logger.info(
            "%s: registered for storage %r (%s)",
            self.peer.label,
            storage_name,
            "read-only" if self.read_only else "read-write",
        )
        return self.last_tid

    def get_info(self) -> StorageInfo:
        return self._hosted.info()

    # What another server on the same database committed before a client
    # asks is published before the answer (``catch_up``): a client that
    # syncs sees every commit acknowledged to anyone before.

    def lastTransaction(self) -> bytes | Later[bytes]:
        hosted = self._hosted
        if hosted.mvcc is not None:
            return Later(self._last_transaction_when_current())
        return hosted.last_tid

    async def _last_transaction_when_current(self) -> bytes:
        await self._hosted.catch_up()
        return self._hosted.last_tid

    def ping(self) -> Later[None] | None:
        if self.hosted is not None and self.hosted.mvcc is not None:
            return Later(self.hosted.catch_up())
        return None

    def server_status(self) -> SessionStatus:
        hosted = self._hosted
        names = self.peer.credentials.names
        status = SessionStatus(
            **hosted.status(),
            identity=names[0] if names else None,
            access=self.access.name.lower(),
        )
        if self.access >= Access.ADMIN:
            status["clients"] = sorted(
                session.describe() for session in hosted.sessions
            )
        status["replication"] = self.server.replication.status()["storages"][
            hosted.name
        ]
        return status

    def set_client_label(self, label: str) -> None:
        self.peer.label = f"{label} {self.peer.label}"

    async def getInvalidations(self, tid: bytes) -> tuple[bytes, list[bytes]] | None:
        hosted = self._hosted
        known = hosted.invalidations.since(tid)
        if known is not None:
            return known
        age = hosted.settings.invalidation_age
        if age and time.time() - TimeStamp(tid).timeTime() < age:
            return await self.server.tasks.run_in_thread(
                _scan_invalidations, self.storage, tid
            )
        return None

    # -- reads ------------------------------------------------------------

    # The reads run on the event loop, straight from the page cache, unless
    # they might wait for the storage's thread: FileStorage's vote holds its
    # lock (which ``loadSerial``, ``history``, ``getTid``, ``new_oid`` take)
    # and its finish holds its files as well, across the fsync (which
    # ``loadBefore`` waits for).  The loop must not wait for them, so such a
    # read goes to a worker thread and is answered when done (``Later``).
    # ``loadBefore``, by far the most frequent, waits for nothing but a
    # finish, and waits for it without a thread: it is read on the loop
    # once the finish is done.

    # A storage on a database server (``mvcc``) has every read wait for
    # the database, so every read goes to a worker thread.

    def _read(self, function: Callable[..., T], *args: Any) -> T | Later[T]:
        hosted = self._hosted
        if hosted.running or hosted.reads_wait:
            return Later(self.server.tasks.run_in_thread(function, *args))
        return function(*args)

    def loadBefore(self, oid: bytes, before: bytes) -> LoadResult | Later[LoadResult]:
        hosted = self._hosted
        hosted.stats.loads += 1
        self.loads += 1
        if hosted.mvcc is not None:
            return Later(self._load_from_database(oid, before))
        if hosted.finishing:
            return Later(self._load_after_finish(oid, before))
        return hosted.storage.loadBefore(oid, before)

    async def _load_from_database(self, oid: bytes, before: bytes) -> LoadResult:
        """``loadBefore`` in a worker thread, answered in order with the
        invalidations: an answer that says its revision is current must not
        reach the client after the invalidation of a newer one (see
        ``_load_after_finish``), so an answer read in a snapshot older than
        an invalidation of the object published meanwhile is read again."""
        hosted = self._hosted
        mvcc = hosted.mvcc
        assert mvcc is not None
        while True:
            result, seen = await self.server.tasks.run_in_thread(
                mvcc.load_before, oid, before
            )
            if result is None:
                # No revision before ``before``: in a history-free database
                # the one the client wants may have been overwritten by a
                # commit this server has not published yet.  Publish it
                # first, so that the client's retry reads in a snapshot
                # that has it.
                await hosted.catch_up()
                return result
            if result[2] is not None or hosted.last_tid <= seen:
                return result
            changed = hosted.invalidations.since(seen)
            if changed is not None and oid not in changed[1]:
                return result

    async def _load_after_finish(self, oid: bytes, before: bytes) -> LoadResult:
        """``loadBefore`` on the loop once the finish under way is done.

        The wait is the rest of one fsync, and costs the loop nothing: it
        serves others meanwhile.  Reading on the loop, and answering at
        once, also keeps the answers in order with the invalidations: a ZEO
        client caches a record as current when its answer says so and no
        invalidation of the object came before it, so an answer read before
        a commit must not follow that commit's invalidation.
        """
        hosted = self._hosted
        while hosted.finishing:
            await asyncio.wait(list(hosted.finishing))
        return hosted.storage.loadBefore(oid, before)

    def loadSerial(self, oid: bytes, serial: bytes) -> bytes | Later[bytes]:
        return self._read(self.storage.loadSerial, oid, serial)

    def getTid(self, oid: bytes) -> bytes | Later[bytes]:
        return self._read(self.storage.getTid, oid)

    def history(
        self, oid: bytes, size: int = 1
    ) -> list[dict[str, Any]] | Later[list[dict[str, Any]]]:
        return self._read(_history, self.storage, oid, size)

    def record_iternext(
        self, next_oid: bytes | None = None
    ) -> RecordIteration | Later[RecordIteration]:
        record_iternext: Callable[[bytes | None], RecordIteration] | None = getattr(
            self.storage, "record_iternext", None
        )
        if record_iternext is None:
            raise TypeError("the storage does not support record_iternext")
        return self._read(record_iternext, next_oid)

    def new_oids(self, n: int = MAX_NEW_OIDS) -> list[bytes] | Later[list[bytes]]:
        if self.read_only:
            raise ReadOnlyError()
        count = min(max(n, 1), MAX_NEW_OIDS)
        if self._hosted.mvcc is not None:
            return Later(self._new_oids_in_storage_thread(count))
        return self._read(_new_oids, self.storage, count)

    async def _new_oids_in_storage_thread(self, count: int) -> list[bytes]:
        """A database storage's commit instance allocates them
        (``MVCCHosting.new_oid``)."""
        return await self._hosted.submit(_new_oids, self.storage, count)

    # -- administration ---------------------------------------------------

    async def pack(self, t: float, wait: bool = True) -> None:
        if self.access < Access.ADMIN:
            raise StorageError(
                f"access denied: {self.peer.credentials.describe()} may not pack "
                f"storage {self._hosted.name!r} (it has {self.access.name.lower()} "
                "access)"
            )
        if wait:
            await self._pack(t, wait)
        else:
            self.server.tasks.spawn(self._pack(t, wait))

    async def _pack(self, t: float, wait: bool) -> None:
        hosted = self._hosted
        logger.info("%s: pack(t=%r) started", self.peer.label, t)
        hosted.packs += 1
        try:
            await self.server.tasks.run_in_thread(_pack, self.storage, t)
        except POSError as error:
            # The storage refused this pack ("Already packing", nothing to
            # pack since the last one): the request's failure, not ours.
            logger.warning("%s: pack(t=%r) failed: %r", self.peer.label, t, error)
            if wait:
                raise
            return
        logger.info("%s: pack(t=%r) complete", self.peer.label, t)
        hosted.replication.packed(t)
        hosted.broadcast_info()

    async def undoLog(self, first: int, last: int) -> Sequence[dict[str, Any]]:
        if not self._hosted.info()["supportsUndo"]:
            return ()
        return await self.server.tasks.run_in_thread(self.storage.undoLog, first, last)

    async def undoInfo(
        self, first: int, last: int, spec: dict[str, Any] | None
    ) -> Sequence[dict[str, Any]]:
        if not self._hosted.info()["supportsUndo"]:
            return ()
        return await self.server.tasks.run_in_thread(
            self.storage.undoInfo, first, last, spec
        )

    # -- iteration ----------------------------------------------------------

    def iterator_start(self, start: bytes | None, stop: bytes | None) -> int:
        iid = next(self._iterator_ids)
        self._iterators[iid] = (
            iter(self.storage.iterator(start, stop)),
            self._hosted.packs,
        )
        return iid

    async def iterator_next(self, iid: int) -> TransactionHeader | None:
        iterator = self._iterator(iid)
        info: TransactionRecord | None = await self.server.tasks.run_in_thread(
            next, iterator, None
        )
        if info is None:
            self._forget_iterator(iid)
            return None
        self._last_transaction_info[iid] = info
        return (info.tid, info.status, info.user, info.description, info.extension)

    def iterator_record_start(self, txn_iid: int, tid: bytes) -> int:
        info = self._last_transaction_info.get(txn_iid)
        if info is None:
            # As ZEO: a KeyError means "no such iterator" to its client.
            raise KeyError(txn_iid)
        if info.tid != tid:
            raise ValueError(f"no current transaction {tid!r} in iterator {txn_iid}")
        iid = next(self._iterator_ids)
        begun = self._iterators.get(txn_iid, (None, self._hosted.packs))[1]
        self._iterators[iid] = (iter(info), begun)
        return iid

    async def iterator_record_next(self, iid: int) -> RecordHeader | None:
        iterator = self._iterator(iid)
        record: DataRecord | None = await self.server.tasks.run_in_thread(
            next, iterator, None
        )
        if record is None:
            self._forget_iterator(iid)
            return None
        return (record.oid, record.tid, record.data, record.data_txn)

    def iterator_gc(self, iids: list[int]) -> None:
        for iid in iids:
            self._forget_iterator(iid)

    def _iterator(self, iid: int) -> Iterator[Any]:
        """The iterator ``iid``; KeyError, as with ZEO, once it is exhausted
        or collected (ZEO's client relies on that exception).  One begun
        before a pack fails: the file it reads has been replaced."""
        iterator, packs = self._iterators[iid]
        if packs != self._hosted.packs:
            self._forget_iterator(iid)
            raise StorageError(
                f"iterator {iid} cannot go on: the storage was packed since it "
                "began; start again"
            )
        return iterator

    def _forget_iterator(self, iid: int) -> None:
        iterator, _ = self._iterators.pop(iid, (None, 0))
        self._last_transaction_info.pop(iid, None)
        close = getattr(iterator, "close", None)
        if close is not None:
            close()

    async def sendBlob(self, oid: bytes, serial: bytes) -> None:
        load_blob = blob_storage(self.storage).loadBlob
        if self._hosted.reads_wait:
            path = await self.server.tasks.run_in_thread(load_blob, oid, serial)
        else:
            path = load_blob(oid, serial)
        await self.peer.send_blob(oid, serial, path)

    # -- end of the connection ----------------------------------------------

    def disconnected(self) -> None:
        """The connection is gone: abort and unlock whatever it held."""
        if self.closed:
            return
        self.closed = True
        self._discard_upload()
        for iid in list(self._iterators):
            self._forget_iterator(iid)
        hosted = self.hosted
        if hosted is None:
            return
        self.end_replication()
        hosted.sessions.discard(self)
        txn = self.transaction
        if txn is None:
            logger.info("%s: disconnected", self.peer.label)
            return
        hosted.stats.aborts += 1
        logger.warning(
            "%s: disconnected during a %s transaction",
            self.peer.label,
            txn.state.state.value,
        )
        if txn.state.in_storage:
            return  # vote/finish running in the storage thread cleans up
        if txn.state.locked:
            self.server.tasks.spawn(self._abort_in_storage())
        else:
            self._end_transaction()


def _history(storage: ServedStorage, oid: bytes, size: int) -> list[dict[str, Any]]:
    return storage.history(oid, size=size)


def _new_oids(storage: ServedStorage, n: int) -> list[bytes]:
    new_oid = storage.new_oid
    return [new_oid() for _ in range(n)]


def _scan_invalidations(
    storage: ServedStorage, tid: bytes
) -> tuple[bytes, list[bytes]] | None:
    """Oids changed after ``tid``, read from the storage (slow; a thread)."""
    oids: set[bytes] = set()
    latest = None
    for transaction in storage.iterator(p64(u64(tid) + 1)):
        oids.update(record.oid for record in transaction)
        latest = transaction.tid
    if latest is None:
        latest = storage.lastTransaction()
    return latest, list(oids)


def _pack(storage: ServedStorage, t: float) -> None:
    storage.pack(t, referencesf)
