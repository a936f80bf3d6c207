"""One connected client: its registration, reads, and its transaction.

A ``Session`` is what the wire methods act on.  It knows its client only
through the small ``Peer`` interface (send an async call, close), so it can
be driven by the asyncio transport or directly by tests.

Transactions follow ZEO 5: ``tpc_begin`` and the stores are asynchronous
calls that only fill the session's ``PendingTransaction``; ``vote`` takes the
storage's commit lock and replays the buffer into the storage in the
storage's worker thread; ``tpc_finish`` commits there, publishes the
invalidations to every other session, sends ``info`` and returns the tid;
``tpc_abort`` or a lost connection aborts and unlocks.

An async transaction call cannot be answered, so when one fails (a stale
token, a read-only connection) the error is remembered and the next ``vote``
raises it -- the client sees why its transaction failed instead of a dropped
connection.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ZODB.Connection import TransactionMetaData
from ZODB.POSException import (
    ConflictError,
    ReadOnlyError,
    StorageTransactionError,
)
from ZODB.serialize import referencesf
from ZODB.TimeStamp import TimeStamp
from ZODB.utils import p64, u64, z64

from . import commit
from .blobs import BlobUpload, blob_storage, remove_quietly, shared_blob_path
from .commit import PendingTransaction
from .storage_server import HostedStorage, StorageServer
from .transaction_state import Event, State

logger = logging.getLogger(__name__)

MAX_NEW_OIDS = 100


class Peer(Protocol):
    label: str

    def send_async(self, method: str, args: tuple[Any, ...]) -> None: ...

    async def send_blob(self, oid: bytes, serial: bytes, path: str) -> None: ...

    def close(self) -> None: ...


@dataclass
class VoteResult:
    """What a replay-and-vote in the storage thread produced."""

    resolved: list[bytes]
    invalidated: list[bytes]
    conflicts: list[dict[str, Any]]


class Session:
    """The server side of one client connection."""

    def __init__(self, server: StorageServer, peer: Peer) -> None:
        self.server = server
        self.peer = peer
        self.hosted: HostedStorage | None = None
        self.read_only = server.settings.read_only
        self.closed = False
        #: Invalidations for tids up to this one are not sent to the client.
        self.last_tid = b""
        self.transaction: PendingTransaction | None = None
        self._vote_result: VoteResult | None = None
        self._async_error: Exception | None = None
        self._upload: BlobUpload | None = None
        self._iterators: dict[int, Iterator[Any]] = {}
        self._last_transaction_info: dict[int, Any] = {}
        self._iterator_ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"<Session {self.peer.label}>"

    @property
    def storage(self) -> Any:
        assert self.hosted is not None
        return self.hosted.storage

    @property
    def _hosted(self) -> HostedStorage:
        assert self.hosted is not None
        return self.hosted

    # -- outgoing ---------------------------------------------------------

    def send_async(self, method: str, args: tuple[Any, ...]) -> None:
        if not self.closed:
            self.peer.send_async(method, args)

    def invalidate(self, tid: bytes, oids: list[bytes]) -> None:
        if tid > self.last_tid:
            self.last_tid = tid
            self.send_async("invalidateTransaction", (tid, oids))

    def close_connection(self, reason: str) -> None:
        logger.warning("%s: closing connection: %s", self.peer.label, reason)
        self.peer.close()

    # -- connection -------------------------------------------------------

    def register(self, storage_name: str, read_only: bool) -> bytes:
        if self.hosted is not None:
            raise ValueError("duplicate register() call")
        hosted = self.server.hosted.get(storage_name)
        if hosted is None:
            raise ValueError(f"unknown storage: {storage_name}")
        if not read_only and (self.read_only or hosted.read_only):
            raise ReadOnlyError()
        self.read_only = self.read_only or bool(read_only) or hosted.read_only
        self.hosted = hosted
        hosted.sessions.add(self)
        self.last_tid = hosted.storage.lastTransaction() or z64
        logger.info(
            "%s: registered for storage %r (%s)",
            self.peer.label,
            storage_name,
            "read-only" if self.read_only else "read-write",
        )
        return self.last_tid

    def get_info(self) -> dict[str, Any]:
        return self._hosted.info()

    def lastTransaction(self) -> bytes:  # noqa: N802 - wire name
        return self.storage.lastTransaction() or z64

    def ping(self) -> None:
        return None

    def server_status(self) -> dict[str, Any]:
        return self._hosted.status()

    def set_client_label(self, label: Any) -> None:
        self.peer.label = f"{label} {self.peer.label}"

    async def getInvalidations(  # noqa: N802 - wire name
        self, tid: bytes
    ) -> tuple[bytes, list[bytes]] | None:
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

    def loadBefore(self, oid: bytes, before: bytes) -> Any:  # noqa: N802
        hosted = self._hosted
        hosted.stats.loads += 1
        return hosted.storage.loadBefore(oid, before)

    def loadSerial(self, oid: bytes, serial: bytes) -> bytes:  # noqa: N802
        return self.storage.loadSerial(oid, serial)

    def getTid(self, oid: bytes) -> bytes:  # noqa: N802
        return self.storage.getTid(oid)

    def history(self, oid: bytes, size: int = 1) -> list[dict[str, Any]]:
        return self.storage.history(oid, size=size)

    def record_iternext(self, next: Any = None) -> Any:  # noqa: A002
        record_iternext = getattr(self.storage, "record_iternext", None)
        if record_iternext is None:
            raise TypeError("the storage does not support record_iternext")
        return record_iternext(next)

    def new_oids(self, n: int = MAX_NEW_OIDS) -> list[bytes]:
        if self.read_only:
            raise ReadOnlyError()
        n = min(max(n, 1), MAX_NEW_OIDS)
        new_oid = self.storage.new_oid
        return [new_oid() for _ in range(n)]

    # -- administration ---------------------------------------------------

    async def pack(self, t: float, wait: bool = True) -> None:
        if wait:
            await self._pack(t)
        else:
            self.server.tasks.spawn(self._pack(t))

    async def _pack(self, t: float) -> None:
        hosted = self._hosted
        logger.info("%s: pack(t=%r) started", self.peer.label, t)
        await self.server.tasks.run_in_thread(_pack, self.storage, t)
        logger.info("%s: pack(t=%r) complete", self.peer.label, t)
        hosted.broadcast_info()

    async def undoLog(self, first: int, last: int) -> Any:  # noqa: N802
        if not self._hosted.info()["supportsUndo"]:
            return ()
        return await self.server.tasks.run_in_thread(self.storage.undoLog, first, last)

    async def undoInfo(self, first: int, last: int, spec: Any) -> Any:  # noqa: N802
        if not self._hosted.info()["supportsUndo"]:
            return ()
        return await self.server.tasks.run_in_thread(
            self.storage.undoInfo, first, last, spec
        )

    # -- iteration ----------------------------------------------------------

    def iterator_start(self, start: bytes | None, stop: bytes | None) -> int:
        iid = next(self._iterator_ids)
        self._iterators[iid] = iter(self.storage.iterator(start, stop))
        return iid

    async def iterator_next(self, iid: int) -> Any:
        iterator = self._iterator(iid)
        info = await self.server.tasks.run_in_thread(next, iterator, None)
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
        self._iterators[iid] = iter(info)
        return iid

    async def iterator_record_next(self, iid: int) -> Any:
        iterator = self._iterator(iid)
        record = await self.server.tasks.run_in_thread(next, iterator, None)
        if record is None:
            self._forget_iterator(iid)
            return None
        return (record.oid, record.tid, record.data, record.data_txn)

    def iterator_gc(self, iids: list[int]) -> None:
        for iid in iids:
            self._forget_iterator(iid)

    def _iterator(self, iid: int) -> Iterator[Any]:
        """The iterator ``iid``; KeyError, as with ZEO, once it is exhausted
        or collected (ZEO's client relies on that exception)."""
        return self._iterators[iid]

    def _forget_iterator(self, iid: int) -> None:
        iterator = self._iterators.pop(iid, None)
        self._last_transaction_info.pop(iid, None)
        close = getattr(iterator, "close", None)
        if close is not None:
            close()

    # -- transactions: buffering ------------------------------------------

    def tpc_begin(
        self,
        token: Any,
        user: bytes | str,
        description: bytes | str,
        extension: dict[Any, Any],
        tid: bytes | None = None,
        status: str = " ",
    ) -> None:
        if self.read_only:
            raise ReadOnlyError()
        if self.transaction is not None:
            if self.transaction.token == token:
                return
            raise StorageTransactionError(
                "Multiple simultaneous tpc_begin requests from one client."
            )
        self._async_error = None
        metadata = TransactionMetaData(user, description, dict(extension))
        self.transaction = PendingTransaction(token, metadata, tid, status)
        self._hosted.stats.active_txns += 1

    def _pending(self, token: Any) -> PendingTransaction:
        txn = self.transaction
        if txn is None:
            raise StorageTransactionError(None, token)
        if txn.token != token:
            raise StorageTransactionError(txn.token, token)
        if txn.state.state is not State.BUFFERING:
            raise StorageTransactionError("the transaction is already voting")
        return txn

    def storea(self, oid: bytes, serial: bytes, data: bytes, token: Any) -> None:
        self._pending(token).add(commit.STORE, oid, serial, data)
        self._hosted.stats.stores += 1

    def checkCurrentSerialInTransaction(  # noqa: N802
        self, oid: bytes, serial: bytes, token: Any
    ) -> None:
        self._pending(token).add(commit.CHECK_READ, oid, serial)

    def deleteObject(self, oid: bytes, serial: bytes, token: Any) -> None:  # noqa: N802
        self._pending(token).add(commit.DELETE, oid, serial)
        self._hosted.stats.stores += 1

    def restorea(
        self,
        oid: bytes,
        serial: bytes,
        data: bytes | None,
        prev_txn: bytes | None,
        token: Any,
    ) -> None:
        self._pending(token).add(commit.RESTORE, oid, serial, data, prev_txn)
        self._hosted.stats.stores += 1

    def undoa(self, undo_id: bytes, token: Any) -> None:
        self._pending(token).add(commit.UNDO, undo_id)

    def storeBlobStart(self) -> None:  # noqa: N802 - wire name
        if self.transaction is None or self.read_only:
            raise StorageTransactionError("storeBlobStart outside a transaction")
        self._discard_upload()
        self._upload = BlobUpload(self.storage)

    def storeBlobChunk(self, chunk: bytes) -> None:  # noqa: N802
        if self._upload is None:
            raise StorageTransactionError("storeBlobChunk without storeBlobStart")
        self._upload.write(chunk)

    def storeBlobEnd(  # noqa: N802
        self, oid: bytes, serial: bytes | None, data: bytes, token: Any
    ) -> None:
        upload, self._upload = self._upload, None
        if upload is None:
            raise StorageTransactionError("storeBlobEnd without storeBlobStart")
        path = upload.finish()
        try:
            txn = self._pending(token)
        except Exception:
            remove_quietly(path)
            raise
        txn.blobs.append((oid, serial, data, path))

    def storeBlobShared(  # noqa: N802
        self, oid: bytes, serial: bytes | None, data: bytes, name: str, token: Any
    ) -> None:
        txn = self._pending(token)
        txn.blobs.append((oid, serial, data, shared_blob_path(self.storage, oid, name)))

    async def sendBlob(self, oid: bytes, serial: bytes) -> None:  # noqa: N802
        path = blob_storage(self.storage).loadBlob(oid, serial)
        await self.peer.send_blob(oid, serial, path)

    def _discard_upload(self) -> None:
        upload, self._upload = self._upload, None
        if upload is not None:
            upload.discard()

    def async_call_failed(self, method: str, exc: Exception) -> None:
        """An async transaction call failed: report it at the vote."""
        logger.info("%s: %s failed: %r", self.peer.label, method, exc)
        if self._async_error is None:
            self._async_error = exc

    # -- transactions: two-phase commit -------------------------------------

    async def vote(self, token: Any) -> Any:
        if self._async_error is not None:
            error, self._async_error = self._async_error, None
            if self.transaction is not None:
                self._end_transaction(aborted=True)
            raise error
        txn = self._pending(token)
        hosted = self._hosted
        state = txn.state
        state.process(Event.VOTE)
        await hosted.commit_lock.acquire(self)
        if self.transaction is not txn:
            hosted.commit_lock.release(self)
            raise StorageTransactionError("the transaction ended during the vote")
        state.process(Event.LOCK_GRANTED)
        try:
            result = await hosted.in_worker(self._replay_and_vote, txn)
        except Exception as exc:
            if isinstance(exc, ConflictError):
                hosted.stats.conflicts += 1
            self._end_transaction(aborted=True)
            raise
        if self.closed or state.state is State.ABORT_REQUESTED:
            if not result.conflicts:
                await self._abort_in_storage()
            else:
                self._end_transaction(aborted=True)
            raise StorageTransactionError("the transaction was aborted during the vote")
        if result.conflicts:
            # Client-side resolution: the storage aborted, the client sends
            # resolved data and votes again.
            hosted.commit_lock.release(self)
            state.process(Event.CONFLICTS)
            hosted.stats.conflicts += len(result.conflicts)
            return result.conflicts
        state.process(Event.VOTED)
        hosted.stats.conflicts_resolved += len(result.resolved)
        self._vote_result = result
        return result.resolved

    def _replay_and_vote(self, txn: PendingTransaction) -> VoteResult:
        """Replay the buffered operations and vote (in the storage thread)."""
        storage = self.storage
        metadata = txn.metadata
        if txn.tid is not None or txn.status != " ":
            storage.tpc_begin(metadata, txn.tid, txn.status)
        else:
            storage.tpc_begin(metadata)
        client_resolves = self._hosted.settings.client_conflict_resolution
        result = VoteResult([], [], [])
        conflicts: dict[bytes, dict[str, Any]] = {}
        try:

            def store(oid: bytes, serial: Any, data: bytes, path: str | None) -> None:
                try:
                    if path is None:
                        storage.store(oid, serial, data, "", metadata)
                    else:
                        storage.storeBlob(oid, serial, data, path, "", metadata)
                except ConflictError as err:
                    if not (client_resolves and err.serials):
                        raise
                    conflicts[oid] = {"oid": oid, "serials": err.serials, "data": data}
                else:
                    conflicts.pop(oid, None)
                    result.invalidated.append(oid)

            for operation, *args in txn.operations:
                if operation == commit.STORE:
                    oid, serial, data = args
                    store(oid, serial, data, None)
                elif operation == commit.CHECK_READ:
                    storage.checkCurrentSerialInTransaction(*args, metadata)
                elif operation == commit.DELETE:
                    storage.deleteObject(*args, metadata)
                    result.invalidated.append(args[0])
                elif operation == commit.RESTORE:
                    oid, serial, data, prev_txn = args
                    storage.restore(oid, serial, data, "", prev_txn, metadata)
                    result.invalidated.append(oid)
                elif operation == commit.UNDO:
                    _, oids = storage.undo(args[0], metadata)
                    result.invalidated.extend(oids)
                    result.resolved.extend(oids)
            for oid, serial, data, path in txn.blobs:
                store(oid, serial, data, path)
            if not conflicts:
                resolved = storage.tpc_vote(metadata)
                if resolved:
                    result.resolved.extend(resolved)
            if conflicts:
                storage.tpc_abort(metadata)
                result.conflicts = list(conflicts.values())
        except BaseException:
            storage.tpc_abort(metadata)
            raise
        return result

    async def tpc_finish(self, token: Any) -> bytes | None:
        txn = self.transaction
        if txn is None or txn.token != token:
            logger.warning("%s: tpc_finish for an unknown transaction", self.peer.label)
            return None
        vote_result = self._vote_result
        if txn.state.state is not State.VOTED or vote_result is None:
            raise StorageTransactionError("tpc_finish called before a successful vote")
        hosted = self._hosted
        txn.state.process(Event.FINISH)
        finishing = hosted.submit(self._finish_in_storage, txn)
        # The storage thread runs its calls in order, so the next voter may
        # have the lock now: its replay waits behind this finish in the
        # thread's queue instead of for a round trip through the loop once
        # the finish is done.  Its vote reply still follows our
        # invalidations: the thread reports back in order, and each result
        # is handled on the loop in the order it arrives.
        hosted.commit_lock.release(self)
        try:
            tid = await finishing
        except Exception:
            logger.exception("%s: tpc_finish failed", self.peer.label)
            self._end_transaction(aborted=True)
            raise
        hosted.stats.commits += 1
        hosted.publish_commit(self, tid, vote_result.invalidated)
        self.send_async("info", (hosted.size_info(),))
        self._end_transaction(aborted=False)
        return tid

    def _finish_in_storage(self, txn: PendingTransaction) -> bytes:
        storage = self.storage
        committed: list[bytes] = []
        try:
            tid = storage.tpc_finish(txn.metadata, committed.append)
        except BaseException:
            # Abort in this same call: the next voter's replay may be queued
            # right behind it and must find the storage out of this
            # transaction.
            try:
                storage.tpc_abort(txn.metadata)
            except Exception:
                logger.exception(
                    "%s: tpc_abort after a failed tpc_finish failed", self.peer.label
                )
            raise
        return tid or (committed[0] if committed else storage.lastTransaction())

    async def tpc_abort(self, token: Any) -> None:
        txn = self.transaction
        self._async_error = None
        if txn is None or txn.token != token:
            return
        state = txn.state.state
        if state in (State.VOTING, State.ABORT_REQUESTED):
            # The vote is still running; it ends the transaction when done.
            txn.state.process(Event.ABORT_REQUESTED)
        elif state is State.VOTED:
            await self._abort_in_storage()
        elif state in (State.BUFFERING, State.AWAITING_LOCK):
            self._end_transaction(aborted=True)
        # FINISHING, ABORTING: the storage thread's work ends it.

    async def _abort_in_storage(self) -> None:
        txn = self.transaction
        if txn is None:
            return
        txn.state.process(Event.ABORT)
        try:
            await self._hosted.in_worker(self.storage.tpc_abort, txn.metadata)
        finally:
            self._end_transaction(aborted=True)

    def _end_transaction(self, *, aborted: bool) -> None:
        txn = self.transaction
        if txn is None:
            return
        hosted = self._hosted
        self.transaction = None
        self._vote_result = None
        self._discard_upload()
        for _, _, _, path in txn.blobs:
            remove_quietly(path)  # what the storage did not take
        hosted.stats.active_txns -= 1
        if aborted:
            hosted.stats.aborts += 1
        hosted.commit_lock.release(self)

    def on_transaction_timeout(self) -> None:
        logger.critical(
            "%s: transaction timeout after %s seconds",
            self.peer.label,
            self._hosted.settings.transaction_timeout,
        )
        self.peer.close()

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
        hosted.sessions.discard(self)
        txn = self.transaction
        if txn is None:
            logger.info("%s: disconnected", self.peer.label)
            return
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
            self._end_transaction(aborted=True)


def _scan_invalidations(storage: Any, tid: bytes) -> tuple[bytes, list[bytes]] | None:
    """Oids changed after ``tid``, read from the storage (slow; a thread)."""
    oids: set[bytes] = set()
    latest = None
    for transaction in storage.iterator(p64(u64(tid) + 1)):
        oids.update(record.oid for record in transaction)
        latest = transaction.tid
    if latest is None:
        latest = storage.lastTransaction()
    return latest, list(oids)


def _pack(storage: Any, t: float) -> None:
    storage.pack(t, referencesf)
