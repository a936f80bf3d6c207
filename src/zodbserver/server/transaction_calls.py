"""A client's transaction in the server: buffering and two-phase commit.

Transactions follow ZEO 5: ``tpc_begin`` and the stores are asynchronous
calls that only fill the session's ``PendingTransaction``; ``vote`` takes the
storage's commit lock and replays the buffer into the storage in the
storage's worker thread; ``tpc_finish`` commits there, publishes the
invalidations to every other session, sends ``info`` and returns the tid;
``tpc_abort`` or a lost connection aborts and unlocks.  The steps allowed
in each state are in ``transaction_state``.

An async transaction call cannot be answered, so when one fails (a stale
token, a read-only connection) the error is remembered and the next ``vote``
raises it -- the client sees why its transaction failed instead of a dropped
connection.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine, Hashable
from typing import Any, NoReturn

from ZODB.Connection import TransactionMetaData
from ZODB.POSException import (
    ConflictError,
    ReadOnlyError,
    StorageError,
    StorageTransactionError,
    UndoError,
)

from . import spool
from .blobs import BlobUpload, blob_storage, remove_quietly, shared_blob_path
from .commit import Conflict, PendingTransaction, VoteResult
from .session_base import SessionBase
from .status import ClientSnapshot
from .tasks import Later
from .transaction_state import Event, State

logger = logging.getLogger(__name__)


class TransactionCalls(SessionBase):
    """The transaction methods of a session (wire names, as ZEO's)."""

    # -- transactions: buffering ------------------------------------------

    def tpc_begin(
        self,
        token: Hashable,
        user: bytes | str,
        description: bytes | str,
        extension: dict[Hashable, object],
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
        hosted = self._hosted
        self.transaction = PendingTransaction(
            token,
            metadata,
            tid,
            status,
            hosted.settings.transaction_spool_threshold,
            hosted.spool_location,
        )
        hosted.stats.active_txns += 1

    def _pending(self, token: Hashable) -> PendingTransaction:
        txn = self.transaction
        if txn is None:
            raise StorageTransactionError(None, token)
        if txn.token != token:
            raise StorageTransactionError(txn.token, token)
        if txn.state.state is not State.BUFFERING:
            raise StorageTransactionError("the transaction is already voting")
        return txn

    def storea(
        self, oid: bytes, serial: bytes | None, data: bytes, token: Hashable
    ) -> None:
        self._pending(token).add((spool.STORE, oid, serial, data), len(data))
        self._hosted.stats.stores += 1

    def checkCurrentSerialInTransaction(
        self, oid: bytes, serial: bytes | None, token: Hashable
    ) -> None:
        self._pending(token).add((spool.CHECK_READ, oid, serial))

    def deleteObject(self, oid: bytes, serial: bytes, token: Hashable) -> None:
        self._pending(token).add((spool.DELETE, oid, serial))
        self._hosted.stats.stores += 1

    def restorea(
        self,
        oid: bytes,
        serial: bytes,
        data: bytes | None,
        prev_txn: bytes | None,
        token: Hashable,
    ) -> None:
        self._pending(token).add(
            (spool.RESTORE, oid, serial, data, prev_txn),
            0 if data is None else len(data),
        )
        self._hosted.stats.stores += 1

    def undoa(self, undo_id: bytes, token: Hashable) -> None:
        self._pending(token).add((spool.UNDO, undo_id))

    def storeBlobStart(self) -> None:
        txn = self.transaction
        if txn is None or self.read_only:
            raise StorageTransactionError("storeBlobStart outside a transaction")
        self._discard_upload()
        self._upload = BlobUpload(self.storage, self._files, txn.write_failed)

    def storeBlobChunk(self, chunk: bytes) -> None:
        if self._upload is None:
            raise StorageTransactionError("storeBlobChunk without storeBlobStart")
        self.server.traffic.blob_uploaded_bytes += len(chunk)
        self._upload.write(chunk)

    def storeBlobEnd(
        self, oid: bytes, serial: bytes | None, data: bytes, token: Hashable
    ) -> None:
        upload, self._upload = self._upload, None
        if upload is None:
            raise StorageTransactionError("storeBlobEnd without storeBlobStart")
        path = upload.finish()
        try:
            txn = self._pending(token)
        except Exception:
            upload.discard()
            raise
        txn.blobs.append((oid, serial, data, path))

    def storeBlobShared(
        self, oid: bytes, serial: bytes | None, data: bytes, name: str, token: Hashable
    ) -> None:
        txn = self._pending(token)
        txn.blobs.append((oid, serial, data, shared_blob_path(self.storage, oid, name)))

    def async_call_failed(self, method: str, exc: Exception) -> None:
        """An async transaction call failed: report it at the vote."""
        logger.info("%s: %s failed: %r", self.peer.label, method, exc)
        if self._async_error is None:
            self._async_error = exc

    # -- transactions: two-phase commit -------------------------------------

    # The three steps of the commit check and change the transaction's state
    # when their call arrives -- a store sent after the vote in the same
    # packet finds the transaction voting -- and return what waits (the
    # lock, the storage thread) as a ``Later``.

    def vote(self, token: Hashable) -> Later[list[Conflict] | list[bytes]]:
        txn = self.transaction
        if self._async_error is not None and (
            txn is None or txn.state.state is State.BUFFERING
        ):
            error, self._async_error = self._async_error, None
            if txn is not None:
                self._end_transaction()
            raise error
        # A second vote is refused here; a transaction that is voting or
        # voted is ended only by its vote, finish or abort.
        txn = self._pending(token)
        state = txn.state
        state.process(Event.VOTE)
        clock = txn.clock
        clock.vote_requested = clock.now()
        return Later(self._vote_when_locked(txn))

    async def _vote_when_locked(
        self, txn: PendingTransaction
    ) -> list[Conflict] | list[bytes]:
        hosted = self._hosted
        state = txn.state
        clock = txn.clock
        # The blob files must be complete before the storage reads them.
        await self._files.idle()
        if self.transaction is not txn:
            raise StorageTransactionError("the transaction ended during the vote")
        if txn.write_error is not None:
            self._end_transaction()
            raise StorageError(
                f"a blob upload could not be written: {txn.write_error}"
            ) from txn.write_error
        if hosted.replication.required:
            try:
                await hosted.replication.before_vote(self.peer.label)
            except Exception:
                if self.transaction is txn:
                    self._end_transaction()
                raise
            if self.transaction is not txn:
                raise StorageTransactionError("the transaction ended during the vote")
        try:
            await hosted.commit_lock.acquire(self)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.transaction is txn or (task is not None and task.cancelling()):
                raise
            # Aborted (or disconnected) while it waited: the wait ended.
            raise StorageTransactionError(
                "the transaction was aborted while its vote waited for the commit lock"
            ) from None
        if self.transaction is not txn:
            hosted.commit_lock.release(self)
            raise StorageTransactionError("the transaction ended during the vote")
        state.process(Event.LOCK_GRANTED)
        clock.locked = clock.now()
        try:
            result = await hosted.in_worker(self._replay_and_vote, txn)
            clock.voted = clock.now()
        except Exception as exc:
            if isinstance(exc, ConflictError):
                hosted.stats.conflicts += 1
            self._end_transaction()
            raise
        if self.closed or state.state is State.ABORT_REQUESTED:
            if not result.conflicts:
                await self._abort_in_storage()
            else:
                self._end_transaction()
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
        if txn.tid is not None:
            # A tid the client chose (copying transactions from another
            # storage) must come after every committed one: the storage
            # takes it as it is.
            last = storage.lastTransaction()
            if last is not None and txn.tid <= last:
                raise StorageTransactionError(
                    f"tid {txn.tid.hex()} is not after the last transaction "
                    f"{last.hex()}"
                )
        if txn.tid is not None or txn.status != " ":
            storage.tpc_begin(metadata, txn.tid, txn.status)
        else:
            storage.tpc_begin(metadata)
        client_resolves = self._hosted.settings.client_conflict_resolution
        result = VoteResult([], [], [])
        conflicts: dict[bytes, Conflict] = {}
        try:

            def store(
                oid: bytes, serial: bytes | None, data: bytes, path: str | None
            ) -> None:
                try:
                    result.size += len(data)
                    if path is None:
                        storage.store(oid, serial, data, "", metadata)
                    else:
                        blob_storage(storage).storeBlob(
                            oid, serial, data, path, "", metadata
                        )
                except ConflictError as err:
                    if not (client_resolves and err.serials):
                        raise
                    conflicts[oid] = {"oid": oid, "serials": err.serials, "data": data}
                else:
                    conflicts.pop(oid, None)
                    result.invalidated.append(oid)

            # ZEO's client (and ours, as ZEO's) sends a blob's record twice:
            # as a store and with the blob.  Stored once, the transaction
            # has one record per object, as FileStorage's index check at
            # its next start expects of the last transaction.
            with_blobs = {oid for oid, _, _, _ in txn.blobs}
            for operation in txn.replay():
                if operation[0] == spool.STORE:
                    _, oid, serial, data = operation
                    if oid not in with_blobs:
                        store(oid, serial, data, None)
                elif operation[0] == spool.CHECK_READ:
                    _, oid, serial = operation
                    storage.checkCurrentSerialInTransaction(oid, serial, metadata)
                elif operation[0] == spool.DELETE:
                    _, oid, serial = operation
                    storage.deleteObject(oid, serial, metadata)
                    result.invalidated.append(oid)
                elif operation[0] == spool.RESTORE:
                    _, oid, serial, record, prev_txn = operation
                    storage.restore(oid, serial, record, "", prev_txn, metadata)
                    result.invalidated.append(oid)
                elif operation[0] == spool.UNDO:
                    _, undo_id = operation
                    _, oids = _undo(storage, undo_id, metadata)
                    result.invalidated.extend(oids)
                    result.resolved.extend(oids)
            for oid, serial, data, path in txn.blobs:
                store(oid, serial, data, path)
            if not conflicts:
                resolved = storage.tpc_vote(metadata)
                if resolved:
                    result.resolved.extend(resolved)
                    # Objects the vote changed that were not stored (an
                    # undo the storage reports here) are invalidated too.
                    stored = set(result.invalidated)
                    result.invalidated.extend(
                        oid for oid in resolved if oid not in stored
                    )
            if conflicts:
                storage.tpc_abort(metadata)
                result.conflicts = list(conflicts.values())
        except BaseException:
            storage.tpc_abort(metadata)
            raise
        return result

    def tpc_finish(self, token: Hashable) -> bytes | Later[bytes] | None:
        txn = self.transaction
        if txn is None or txn.token != token:
            logger.warning("%s: tpc_finish for an unknown transaction", self.peer.label)
            return None
        vote_result = self._vote_result
        if txn.state.state is not State.VOTED or vote_result is None:
            raise StorageTransactionError("tpc_finish called before a successful vote")
        if self._async_error is not None:
            # A call of this transaction failed after its vote: what the
            # client sent is not what the storage voted, so nothing commits.
            error, self._async_error = self._async_error, None
            return Later(_raise_after(self._abort_in_storage(), error))
        hosted = self._hosted
        txn.state.process(Event.FINISH)
        finishing = hosted.submit_finish(self._finish_in_storage, txn)
        # The storage thread runs its calls in order, so the next voter may
        # have the lock now: its replay waits behind this finish in the
        # thread's queue instead of for a round trip through the loop once
        # the finish is done.  Its vote reply still follows our
        # invalidations: the thread reports back in order, and each result
        # is handled on the loop in the order it arrives.  With synchronous
        # replicas the lock is kept until they have the transaction and it
        # is published (``_finished``).
        if not hosted.replication.required:
            hosted.commit_lock.release(self)
            txn.clock.unlocked = txn.clock.now()
        return Later(self._finished(txn, vote_result, finishing))

    async def _finished(
        self,
        txn: PendingTransaction,
        vote_result: VoteResult,
        finishing: asyncio.Future[bytes],
    ) -> bytes:
        hosted = self._hosted
        try:
            tid = await finishing
        except Exception:
            logger.exception("%s: tpc_finish failed", self.peer.label)
            self._end_transaction()
            raise
        hosted.replication.committed(tid)
        if hosted.replication.required:
            await self._confirm(tid)
            txn.clock.unlocked = txn.clock.now()
        hosted.stats.commits += 1
        self.commits += 1
        hosted.commit_times.record(
            txn.clock,
            client=self.peer.label,
            tid=tid,
            objects=len(vote_result.invalidated),
            size=vote_result.size,
            slow_threshold=hosted.settings.slow_commit_threshold,
        )
        hosted.publish_commit(self, tid, vote_result.invalidated)
        self.send_async("info", (hosted.size_info(),))
        self._end_transaction()
        if self._unconfirmed is not None:
            error, self._unconfirmed = self._unconfirmed, None
            raise error
        return tid

    async def _confirm(self, tid: bytes) -> None:
        """Wait, holding the commit lock, until the replicas have ``tid``
        (sync-replicas): until then no other client is told of it, so no
        one sees a commit that the loss of the primary would take back.
        If they do not confirm it in time it is published all the same --
        it is in the storage -- and the client gets the error."""
        try:
            await self._hosted.replication.confirmed(tid)
        except StorageError as error:
            logger.error("%s: %s", self.peer.label, error)
            self._unconfirmed = error

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

    def tpc_abort(self, token: Hashable) -> Later[None] | None:
        txn = self.transaction
        self._async_error = None
        if txn is None or txn.token != token:
            return None
        # Counted as ZEO does: an abort the client asks for (or its
        # disconnect causes), not a failed vote, which ends the transaction
        # before the client's tpc_abort comes.
        self._hosted.stats.aborts += 1
        state = txn.state.state
        if state in (State.VOTING, State.ABORT_REQUESTED):
            # The vote is still running; it ends the transaction when done.
            txn.state.process(Event.ABORT_REQUESTED)
        elif state is State.VOTED:
            return Later(self._abort_in_storage())
        elif state in (State.BUFFERING, State.AWAITING_LOCK):
            self._end_transaction()
        # FINISHING, ABORTING: the storage thread's work ends it.
        return None

    def _abort_in_storage(self) -> Coroutine[Any, Any, None]:
        """Abort in the storage thread: the state changes now, the
        transaction ends when the abort is done (await the result)."""
        txn = self.transaction
        if txn is None:
            return _nothing()
        txn.state.process(Event.ABORT)
        return self._end_when(self._hosted.submit(self.storage.tpc_abort, txn.metadata))

    async def _end_when(self, work: asyncio.Future[Any]) -> None:
        try:
            await work
        finally:
            self._end_transaction()

    def _end_transaction(self) -> None:
        txn = self.transaction
        if txn is None:
            return
        hosted = self._hosted
        self.transaction = None
        self._vote_result = None
        self._discard_upload()
        for _, _, _, path in txn.blobs:
            # What the storage did not take; after the upload's own writes.
            self._files.submit(functools.partial(remove_quietly, path))
        txn.close()
        hosted.stats.active_txns -= 1
        hosted.commit_lock.release(self)

    def on_transaction_timeout(self) -> None:
        logger.critical(
            "%s: transaction timeout after %s seconds",
            self.peer.label,
            self._hosted.settings.transaction_timeout,
        )
        self.peer.close()

    def snapshot(self) -> ClientSnapshot:
        """This client, as the monitor shows it."""
        credentials = self.peer.credentials
        txn = self.transaction
        lock = None if self.hosted is None else self.hosted.commit_lock
        return {
            "label": self.peer.label,
            "identity": credentials.names[0] if credentials.names else None,
            "address": credentials.address,
            "access": self.access.name.lower(),
            "read_only": self.read_only,
            "connected_at": self.connected_at,
            "loads": self.loads,
            "commits": self.commits,
            "transaction": None if txn is None else txn.state.state.value,
            "waiting_for_lock": lock is not None and lock.is_waiting(self),
            "holds_lock": lock is not None and lock.holder is self,
        }


def _undo(storage: Any, undo_id: bytes, metadata: Any) -> tuple[Any, list[bytes]]:
    """``storage.undo``, with an id it cannot read refused as ``UndoError``
    (FileStorage asserts that the id decodes to 8 bytes)."""
    try:
        result = storage.undo(undo_id, metadata)
    except AssertionError:
        raise UndoError(f"invalid transaction id {undo_id[:40]!r}") from None
    if result is None:
        # ZODB 5's storages may name the objects at the vote instead
        # (RelStorage does).
        return None, []
    tid, oids = result
    return tid, list(oids)


async def _nothing() -> None:
    return None


async def _raise_after(work: Coroutine[Any, Any, None], error: Exception) -> NoReturn:
    await work
    raise error
