"""The storage's two-phase commit: buffering a transaction and committing it.

A commit follows docs/architecture.md, The commit path: ``tpc_begin`` and
the stores are async calls, queued here in the application thread and
handed to the connection thread in batches; ``tpc_vote`` returns the oids
the server (or we, resolving conflicts it handed back) changed; and
``tpc_finish`` updates the cache and calls ZODB's callback on the
connection thread before ``lastTransaction`` moves.

One transaction at a time per storage (the server allows no more per
connection); ``tpc_begin`` blocks on a lock until the previous one ends.  A
transaction belongs to the connection generation it began in: if the
connection drops, every later step raises ``ClientDisconnected``.  The
transaction state here belongs to the application threads, guarded by the
commit lock (the thread rule: ``state.py``).  ``TwoPhaseCommit`` is a part
of ``ClientStorage`` (``storage.py``).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from ZODB import POSException
from ZODB.ConflictResolution import ConflictResolvingStorage

from ..chunks import open_and_read
from .blobs import BlobFiles
from .cache import ClientCache
from .connection import ClientThread
from .exceptions import ClientDisconnected
from .link import QueuedCall
from .manager import ConnectionManager
from .routing import Update

logger = logging.getLogger(__name__)

MB = 1024 * 1024

VOTE_ROUNDS = 9  # conflict-resolution rounds before giving up, as ZEO

#: A transaction's async calls (stores, ...) wait in the application thread
#: and cross to the connection thread in batches of this many calls or bytes:
#: one wake-up and one socket write per batch rather than per store.
BATCH_CALLS = 128
BATCH_BYTES = MB


#: A blob committed to a server storage without a blob directory.
NO_SERVER_BLOBS = (
    "storage {!r} on the server has no blob directory, so it cannot store "
    "blobs: give it one (blob-dir in its section of zeo.conf, blob-storage "
    "in a zodbserver:server buildout part, --blob-dir with zeoserver -f) "
    "and restart the server"
)


class CommitBuffer:
    """What one transaction stored, for updating the cache at the end."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.stores: dict[bytes, bytes | None] = {}
        self.server_resolved: set[bytes] = set()
        self.client_resolved: set[bytes] = set()
        self.blobs: list[tuple[bytes, str]] = []  # (oid, uploaded file)
        self.error: BaseException | None = None
        self._calls: list[QueuedCall] = []  # async calls not yet handed over
        self._call_bytes = 0

    def queue(self, method: str, args: tuple[Any, ...]) -> bool:
        """Queue an async call; true when the batch should go now."""
        self._calls.append((method, args))
        self._call_bytes += sum(len(arg) for arg in args if isinstance(arg, bytes))
        return len(self._calls) >= BATCH_CALLS or self._call_bytes >= BATCH_BYTES

    def take_calls(self) -> list[QueuedCall]:
        calls, self._calls, self._call_bytes = self._calls, [], 0
        return calls

    def failed(self, exc: BaseException) -> None:
        """An async call could not be sent: the vote reports it."""
        if self.error is None:
            self.error = exc

    def updates(self) -> list[Update]:
        updates: list[Update] = [
            (oid, data, oid in self.server_resolved)
            for oid, data in self.stores.items()
        ]
        updates.extend(
            (oid, None, True) for oid in self.server_resolved - self.stores.keys()
        )
        return updates


def _no_callback(tid: bytes) -> None:
    pass


class TwoPhaseCommit(ConflictResolvingStorage):
    """``tpc_begin`` to ``tpc_finish``, and the calls in between."""

    # Owned by ClientStorage:
    _manager: ConnectionManager
    _thread: ClientThread
    _cache: ClientCache
    _blobs: BlobFiles | None
    _wait_timeout: float
    _commit_lock: threading.Lock
    _transaction: Any
    _buffer: CommitBuffer | None
    _iterator_gc: Callable[[], None]
    #: False while the server's storage has no blob directory (set on the
    #: connection thread at each connect, read by application threads).
    _server_blobs: bool = True

    def isReadOnly(self) -> bool:
        return self._manager.state.read_only

    def _blob_files(self) -> BlobFiles:
        if self._blobs is None:
            raise POSException.Unsupported("No blob cache directory is configured.")
        return self._blobs

    def _send(self, buffer: CommitBuffer, method: str, *args: Any) -> None:
        """An async call belonging to the transaction ``buffer`` records."""
        if buffer.generation != self._manager.state.generation:
            raise ClientDisconnected(method, "on a disconnected transaction")
        if buffer.queue(method, args):
            self._flush(buffer)

    def _flush(self, buffer: CommitBuffer) -> None:
        """Hand the queued async calls of ``buffer`` to the connection thread."""
        calls = buffer.take_calls()
        if calls:
            self._thread.call_soon(
                self._manager.send_calls, calls, buffer.generation, buffer.failed
            )

    def tpc_transaction(self) -> Any:
        return self._transaction

    def _check_trans(self, txn: Any, method: str) -> CommitBuffer:
        if self.isReadOnly():
            raise POSException.ReadOnlyError()
        buffer = self._buffer
        if txn is not self._transaction or buffer is None:
            raise POSException.StorageTransactionError(
                "Transaction not committing", method, txn
            )
        if buffer.generation != self._manager.state.generation:
            raise ClientDisconnected(method, "on a disconnected transaction")
        return buffer

    def tpc_begin(self, txn: Any, tid: bytes | None = None, status: str = " ") -> None:
        if self.isReadOnly():
            raise POSException.ReadOnlyError()
        if txn is self._transaction:
            raise POSException.StorageTransactionError(
                "Duplicate tpc_begin calls for same transaction"
            )
        if not self._manager.state.operational:
            # A server restart looks like a pause, as with ZEO: wait for the
            # connection, up to wait_timeout, then fail.
            self._thread.run(self._manager.operational_link(self._wait_timeout))
        self._commit_lock.acquire()
        try:
            state = self._manager.state
            if not state.operational:
                raise ClientDisconnected("tpc_begin while disconnected")
            buffer = CommitBuffer(state.generation)
            self._transaction = txn
            self._buffer = buffer
            self._send(
                buffer,
                "tpc_begin",
                id(txn),
                txn.user,
                txn.description,
                txn.extension,
                tid,
                status,
            )
        except BaseException:
            self._end()
            raise

    def _end(self, tid: bytes | None = None) -> None:
        """Release the transaction; keep (committed) or drop its blob files."""
        buffer = self._buffer
        self._transaction = None
        self._buffer = None
        self._commit_lock.release()
        if buffer is None or self._blobs is None:
            return
        for oid, path in buffer.blobs:
            try:
                if tid is None:
                    self._blobs.discard(path)
                else:
                    self._blobs.committed(oid, tid, path)
            except OSError:
                logger.exception("could not move the blob %s into the cache", path)

    def store(
        self, oid: bytes, serial: bytes | None, data: bytes, version: str, txn: Any
    ) -> None:
        assert not version
        buffer = self._check_trans(txn, "store")
        self._send(buffer, "storea", oid, serial, data, id(txn))
        buffer.stores[oid] = data

    def checkCurrentSerialInTransaction(
        self, oid: bytes, serial: bytes, txn: Any
    ) -> None:
        buffer = self._check_trans(txn, "checkCurrentSerialInTransaction")
        self._send(buffer, "checkCurrentSerialInTransaction", oid, serial, id(txn))

    def deleteObject(self, oid: bytes, serial: bytes, txn: Any) -> None:
        buffer = self._check_trans(txn, "deleteObject")
        self._send(buffer, "deleteObject", oid, serial, id(txn))
        buffer.stores[oid] = None

    def restore(
        self,
        oid: bytes,
        serial: bytes,
        data: bytes | None,
        version: str,
        prev_txn: bytes | None,
        txn: Any,
    ) -> None:
        assert not version
        buffer = self._check_trans(txn, "restore")
        self._send(buffer, "restorea", oid, serial, data, prev_txn, id(txn))
        buffer.stores[oid] = None  # not what the server keeps: just invalidate

    def storeBlob(
        self,
        oid: bytes,
        serial: bytes | None,
        data: bytes,
        blobfilename: str,
        version: str,
        txn: Any,
    ) -> None:
        assert not version
        blobs = self._blob_files()
        if not self._server_blobs:
            raise POSException.Unsupported(NO_SERVER_BLOBS.format(self._storage))
        buffer = self._check_trans(txn, "storeBlob")
        path = blobs.adopt(oid, serial or b"\0" * 8, blobfilename)
        buffer.blobs.append((oid, path))
        self.store(oid, serial, data, "", txn)
        if blobs.shared:
            name = os.path.basename(path)
            self._send(buffer, "storeBlobShared", oid, serial, data, name, id(txn))
            return
        if buffer.generation != self._manager.state.generation:
            raise ClientDisconnected("storeBlob", "on a disconnected transaction")
        self._flush(buffer)  # the queued calls go before the upload
        # Streamed from the connection thread while this thread waits; the
        # first chunks are read here, saving the upload a trip to a thread.
        stream, chunks = open_and_read(path)
        with stream:
            self._thread.wait_for(
                self._manager.send_blob,
                stream,
                chunks,
                (oid, serial, data, id(txn)),
                buffer.generation,
            )

    def undo(self, transaction_id: bytes, txn: Any) -> None:
        buffer = self._check_trans(txn, "undo")
        self._send(buffer, "undoa", transaction_id, id(txn))

    def tpc_vote(self, txn: Any) -> list[bytes] | None:
        buffer = self._check_trans(txn, "tpc_vote")
        try:
            self._vote_rounds(txn, buffer)
        except POSException.StorageTransactionError:
            self._check_trans(txn, "tpc_vote")  # a reconnect explains it
            raise
        except POSException.ConflictError as exc:
            # An unresolved conflict may mean our cached copy is stale.
            oid = getattr(exc, "oid", None)
            if oid is not None:
                self._cache.invalidate(oid, None)
            raise
        if buffer.error is not None:
            raise buffer.error
        resolved = [*buffer.server_resolved, *buffer.client_resolved]
        return resolved or None

    def _vote_rounds(self, txn: Any, buffer: CommitBuffer) -> None:
        for _ in range(VOTE_ROUNDS):
            result = self._thread.wait_for(
                functools.partial(
                    self._manager.call_in_generation,
                    "vote",
                    (id(txn),),
                    buffer.generation,
                    preceding=buffer.take_calls(),
                    on_error=buffer.failed,
                )
            )
            conflicts = False
            for item in result or ():
                if isinstance(item, dict):
                    conflicts = True
                    self._resolve(txn, buffer, item)
                else:
                    buffer.server_resolved.add(item)
            if not conflicts:
                return
        raise POSException.ConflictError("conflicts remain after resolution")

    def _resolve(
        self, txn: Any, buffer: CommitBuffer, conflict: dict[str, Any]
    ) -> None:
        oid = conflict["oid"]
        committed, read = conflict["serials"]
        data = self.tryToResolveConflict(oid, committed, read, conflict["data"])
        self._send(buffer, "storea", oid, committed, data, id(txn))
        buffer.stores[oid] = data
        buffer.client_resolved.add(oid)

    def tpc_finish(self, txn: Any, f: Callable[[bytes], object] | None = None) -> bytes:
        buffer = self._check_trans(txn, "tpc_finish")
        tid: bytes | None = None
        try:
            tid = self._thread.wait_for(
                self._manager.tpc_finish,
                id(txn),
                buffer.generation,
                buffer.updates(),
                f or _no_callback,
            )
        finally:
            self._end(tid)
            self._iterator_gc()
        return tid

    def tpc_abort(self, txn: Any, timeout: float | None = None) -> None:
        buffer = self._buffer
        if txn is not self._transaction or buffer is None:
            return
        buffer.take_calls()  # never sent: nothing to undo on the server
        try:
            if buffer.generation == self._manager.state.generation:
                self._thread.wait_for(
                    self._manager.call_in_generation,
                    "tpc_abort",
                    (id(txn),),
                    buffer.generation,
                )
        except ClientDisconnected:
            logger.debug("%s: disconnected during tpc_abort", self.__name__)
        finally:
            self._end()
            self._iterator_gc()
