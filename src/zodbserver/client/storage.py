"""``ClientStorage``: the synchronous ZODB storage that talks to a server.

ZODB's ``DB`` calls this object from any number of application threads.
Reads answer from the client cache when they can and otherwise cross to the
connection thread (``connection.ClientThread``) and wait.  A commit follows
docs/architecture.md, The commit path: ``tpc_begin`` and the stores are async, ``vote``
returns the oids the server (or we, resolving conflicts it handed back)
changed, and ``tpc_finish`` updates the cache and calls ZODB's callback on
the connection thread before ``lastTransaction`` moves.

Blobs (``blob_dir``) travel through ``blobs.BlobFiles``: uploaded in chunks
with the commit and downloaded on first load into a private cache, or placed
in a directory shared with the server (``shared_blob_dir``).

One transaction at a time per storage (the server allows no more per
connection); ``tpc_begin`` blocks on a lock until the previous one ends.  A
transaction belongs to the connection generation it began in: if the
connection drops, every later step raises ``ClientDisconnected``.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import ZODB.BaseStorage
import ZODB.blob
import ZODB.interfaces
import zope.interface
from ZODB import POSException
from ZODB.ConflictResolution import ConflictResolvingStorage
from ZODB.utils import maxtid

from ..addresses import normalize_addresses
from ..chunks import open_and_read
from ..errors import ConfigurationError
from .blobs import BlobFiles
from .cache import ClientCache
from .cache_file import CacheFile, cache_path
from .connection import ClientThread
from .exceptions import ClientDisconnected
from .iterators import IteratorRegistry, TransactionIterator
from .link import QueuedCall, ServerLink
from .manager import ConnectionManager, Update

logger = logging.getLogger(__name__)

MB = 1024 * 1024

#: Interfaces the server's ``get_info`` can announce, and we then provide.
_OPTIONAL_INTERFACES = (
    ZODB.interfaces.IStorageRestoreable,
    ZODB.interfaces.IStorageIteration,
    ZODB.interfaces.IStorageUndoable,
    ZODB.interfaces.IStorageCurrentRecordIteration,
    ZODB.interfaces.IExternalGC,
)

#: Fewer new oids than this left, and the next batch is asked for early.
_SPARE_OIDS = 50

#: Most siblings prefetched at a time by readahead (``readahead.py``).
DEFAULT_READAHEAD = 512

_VOTE_ROUNDS = 9  # conflict-resolution rounds before giving up, as ZEO

#: A transaction's async calls (stores, ...) wait in the application thread
#: and cross to the connection thread in batches of this many calls or bytes:
#: one wake-up and one socket write per batch rather than per store.
_BATCH_CALLS = 128
_BATCH_BYTES = MB


class _CommitBuffer:
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
        return len(self._calls) >= _BATCH_CALLS or self._call_bytes >= _BATCH_BYTES

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


@zope.interface.implementer(ZODB.interfaces.IMultiCommitStorage)
class ClientStorage(ConflictResolvingStorage):
    """A ZODB storage served by a ZEO-protocol server.

    ``addr``: a port (on 127.0.0.1), ``(host, port)``, ``"host:port"``, a
    Unix socket path, or a list of those; every address is dialed and the
    first server to accept registration wins.  ``storage``: the storage name
    on the server.  ``read_only``: ask for a read-only connection;
    ``read_only_fallback``: accept one when no writable server answers, and
    move to a writable one when it appears.  ``wait``/``wait_timeout``:
    block in the constructor (and in any call made while disconnected) up to
    that many seconds for a connection, then raise ``ClientDisconnected``.
    ``cache_size``: bytes of object data kept in memory; with ``client``
    (and ``var``, default the current directory) or ``cache`` (a path) it
    is also saved to a file between runs.  ``server_sync``: make ``sync()``
    (called at every transaction start) a round trip, so a transaction sees
    every commit that finished before it began.  ``min_disconnect_poll`` and
    ``max_disconnect_poll`` bound the reconnect backoff in seconds.
    ``readahead``: when the application loads several children of one
    object from the server, prefetch up to this many of their siblings at a
    time (``readahead.py``); 0 turns it off.
    """

    def __init__(
        self,
        addr: Any,
        storage: str = "1",
        cache_size: int = 20 * MB,
        name: str = "",
        wait_timeout: float | None = None,
        read_only: bool = False,
        read_only_fallback: bool = False,
        wait: bool = True,
        server_sync: bool = False,
        client_label: str | None = None,
        min_disconnect_poll: float = 1.0,
        max_disconnect_poll: float = 30.0,
        heartbeat_interval: float = 60.0,
        ssl: Any = None,
        ssl_server_hostname: str | None = None,
        blob_dir: str | None = None,
        cache: str | None = None,
        client: str | None = None,
        var: str | None = None,
        shared_blob_dir: bool = False,
        blob_cache_size: int | None = None,
        blob_cache_size_check: int = 10,
        readahead: int = DEFAULT_READAHEAD,
        # Accepted for compatibility with ZEO's signature, and ignored:
        disconnect_poll: float | None = None,
        drop_cache_rather_verify: bool = True,
        credentials: Any = None,
        username: str | None = None,
        password: str | None = None,
        realm: str | None = None,
    ) -> None:
        self._addresses = normalize_addresses(addr)
        if not self._addresses:
            raise ConfigurationError("no server address given")
        self.__name__ = name or str(addr)
        self._storage = storage
        self._wait_timeout = 30.0 if wait_timeout is None else float(wait_timeout)
        self._is_read_only = bool(read_only)
        self.server_sync = server_sync
        self.protocol_version: bytes | None = None
        self._server_addr: str | None = None
        self._info: dict[str, Any] = {
            "length": 0,
            "size": 0,
            "name": "zodbserver client",
            "supportsUndo": False,
            "interfaces": (),
        }
        self._db: Any = None
        # Filled by the connection thread too: a deque appends atomically.
        self._oids: collections.deque[bytes] = collections.deque()
        self._oids_requested = False
        self._oids_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._transaction: Any = None
        self._buffer: _CommitBuffer | None = None
        self._iterators = IteratorRegistry()
        self._blobs = (
            None
            if blob_dir is None
            else BlobFiles(
                blob_dir, shared_blob_dir, blob_cache_size, blob_cache_size_check
            )
        )
        self._cache = ClientCache(cache_size)
        self._cache_file: CacheFile | None = None
        path = cache_path(cache, client, var, storage)
        if path is not None:
            self._cache_file = CacheFile(path)
            self._cache_file.load_into(self._cache)
        self._connection_changed = threading.Condition()
        self._connected = False

        def make_manager() -> ConnectionManager:
            return ConnectionManager(
                self._addresses,
                storage,
                self._cache,
                self,
                read_only=bool(read_only),
                read_only_fallback=bool(read_only_fallback),
                min_poll=min_disconnect_poll,
                max_poll=max_disconnect_poll,
                heartbeat_interval=heartbeat_interval,
                client_label=client_label,
                ssl=ssl,
                ssl_server_hostname=ssl_server_hostname,
                blobs=self._blobs,
                readahead=int(readahead),
            )

        self._thread = ClientThread(make_manager, self.__name__)
        self._manager = self._thread.manager
        if wait:
            try:
                self._thread.run(self._manager.operational_link(self._wait_timeout))
            except BaseException:
                self.close()
                raise

    def __repr__(self) -> str:
        return f"<ClientStorage {self.__name__!r}>"

    # -- calls to the server ---------------------------------------------

    def _call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        wait = self._wait_timeout if timeout is None else timeout
        return self._thread.wait_for(self._manager.start_call, method, args, wait)

    def _send(self, buffer: _CommitBuffer, method: str, *args: Any) -> None:
        """An async call belonging to the transaction ``buffer`` records."""
        if buffer.generation != self._manager.generation:
            raise ClientDisconnected(method, "on a disconnected transaction")
        if buffer.queue(method, args):
            self._flush(buffer)

    def _flush(self, buffer: _CommitBuffer) -> None:
        """Hand the queued async calls of ``buffer`` to the connection thread."""
        calls = buffer.take_calls()
        if calls:
            self._thread.call_soon(
                self._manager.send_calls, calls, buffer.generation, buffer.failed
            )

    # -- the listener side: called on the connection thread ---------------

    def notify_connected(self, link: ServerLink, info: dict[str, Any]) -> None:
        peer = link.peername()
        self._server_addr = peer if isinstance(peer, str) else str(tuple(peer)[:2])
        self.protocol_version = link.protocol_version
        self._is_read_only = link.read_only
        self._info.update(info)
        interfaces = {tuple(item) for item in self._info.get("interfaces", ())}
        optional: tuple[Any, ...] = _OPTIONAL_INTERFACES
        if self._blobs is not None:
            optional += (ZODB.interfaces.IBlobStorage,)
        for iface in optional:
            if (iface.__module__, iface.__name__) in interfaces:
                zope.interface.alsoProvides(self, iface)
        if self._db is not None:
            self._db.invalidateCache()
        self._set_connected(True)

    def notify_disconnected(self) -> None:
        self._iterators.disconnected()
        self._set_connected(False)

    def _set_connected(self, connected: bool) -> None:
        with self._connection_changed:
            self._connected = connected
            self._connection_changed.notify_all()

    def wait_until_connected(self, timeout: float | None = None) -> bool:
        """Block until connected (True) or ``timeout`` seconds pass (False)."""
        with self._connection_changed:
            return self._connection_changed.wait_for(
                lambda: self._connected and self._manager.operational, timeout
            )

    def wait_until_disconnected(self, timeout: float | None = None) -> bool:
        """Block until the connection is lost (True) or ``timeout`` passes."""
        with self._connection_changed:
            return self._connection_changed.wait_for(
                lambda: not self._connected, timeout
            )

    def invalidate_transaction(self, tid: bytes, oids: list[bytes]) -> None:
        if self._db is not None:
            self._db.invalidate(tid, oids)

    def invalidate_cache(self) -> None:
        if self._db is not None:
            self._db.invalidateCache()

    def update_info(self, info: dict[str, Any]) -> None:
        self._info.update(info)

    # -- identity and state ------------------------------------------------

    def getName(self) -> str:
        state = "connected" if self.is_connected() else "disconnected"
        return f"{self.__name__} ({state})"

    def sortKey(self) -> str:
        if self._server_addr is None:
            raise ClientDisconnected("never connected")
        return f"{self._storage}:{self._server_addr}"

    def is_connected(self) -> bool:
        return self._manager.operational

    def getSize(self) -> int:
        return int(self._info.get("size", 0))

    def __len__(self) -> int:
        return int(self._info.get("length", 0))

    def supportsUndo(self) -> bool:
        return bool(self._info.get("supportsUndo"))

    def isReadOnly(self) -> bool:
        return self._is_read_only

    is_read_only = isReadOnly

    @property
    def verify_result(self) -> str | None:
        return self._manager.verify_result

    def registerDB(self, db: Any) -> None:
        super().registerDB(db)
        self._db = db

    def close(self) -> None:
        with contextlib.suppress(ClientDisconnected):  # already closed
            self._release_iterators(self._iterators.release_all())
        self._thread.close()
        self._cache.close()
        if self._blobs is not None:
            self._blobs.close()
        cache_file, self._cache_file = self._cache_file, None
        if cache_file is not None:
            try:
                cache_file.save(self._cache)
            except OSError:
                logger.exception("could not save the cache file %s", cache_file.path)
            finally:
                cache_file.close()

    def lastTransaction(self) -> bytes:
        with self._cache.lock:
            return self._cache.get_last_tid()

    def ping(self) -> None:
        self._call("ping")

    def sync(self) -> None:
        if self.server_sync:
            self.ping()

    def server_status(self) -> dict[str, Any]:
        return dict(self._call("server_status"))

    # -- reads -------------------------------------------------------------

    def load(self, oid: bytes, version: str = "") -> tuple[bytes, bytes]:
        result = self.loadBefore(oid, maxtid)
        if result is None:
            raise POSException.POSKeyError(oid)
        return result[0], result[1]

    def loadBefore(
        self, oid: bytes, tid: bytes
    ) -> tuple[bytes, bytes, bytes | None] | None:
        cached = self._cache.load_before(oid, tid)
        if cached is not None:
            if oid in self._manager.readahead.marks:
                with contextlib.suppress(ClientDisconnected):
                    self._thread.call_soon(self._manager.readahead_reached, oid, tid)
            return cached
        return self._thread.wait_for(
            self._manager.start_load, oid, tid, self._wait_timeout
        )

    def prefetch(self, oids: Any, tid: bytes) -> None:
        self._thread.call_soon(self._manager.prefetch, tuple(oids), tid)

    def loadSerial(self, oid: bytes, serial: bytes) -> bytes:
        data: bytes = self._call("loadSerial", oid, serial)
        return data

    def getTid(self, oid: bytes) -> bytes:
        return self.load(oid)[1]

    def history(self, oid: bytes, size: int = 1) -> list[dict[str, Any]]:
        return [dict(entry) for entry in self._call("history", oid, size)]

    def record_iternext(self, next: Any = None) -> Any:
        return self._call("record_iternext", next)

    def new_oid(self) -> bytes:
        if self._is_read_only:
            raise POSException.ReadOnlyError()
        with self._oids_lock:
            if len(self._oids) < _SPARE_OIDS and not self._oids_requested:
                # Ask for the next batch now, so it is here when needed.
                self._oids_requested = True
                self._thread.call_soon(
                    self._manager.request_oids, self._oids.extend, self._oids_arrived
                )
            while not self._oids:  # none spare yet: wait for a batch
                self._oids.extend(self._call("new_oids"))
            return self._oids.popleft()

    def _oids_arrived(self) -> None:
        self._oids_requested = False

    # -- administration ----------------------------------------------------

    def pack(
        self,
        t: float | None = None,
        referencesf: Any = None,
        wait: int = 1,
        days: int = 0,
    ) -> Any:
        if t is None:
            t = time.time()
        return self._call("pack", t - days * 86400, wait)

    def undoLog(self, first: int = 0, last: int = -20, filter: Any = None) -> list[Any]:
        if filter is not None:
            return []
        return [dict(entry) for entry in self._call("undoLog", first, last)]

    def undoInfo(
        self, first: int = 0, last: int = -20, specification: Any = None
    ) -> list[Any]:
        return [
            dict(entry) for entry in self._call("undoInfo", first, last, specification)
        ]

    def iterator(self, start: bytes | None = None, stop: bytes | None = None) -> Any:
        iid = self._call("iterator_start", start, stop)
        iterator = TransactionIterator(self, iid, self._iterators.generation)
        self._iterators.add(iid, iterator)
        return iterator

    def _iterator_gc(self) -> None:
        self._release_iterators(self._iterators.collectable())

    def _release_iterators(self, iids: list[int]) -> None:
        if iids and self._manager.operational:
            self._thread.call_soon(
                self._manager.send_calls,
                [("iterator_gc", (iids,))],
                self._manager.generation,
            )

    def copyTransactionsFrom(self, other: Any, verbose: int = 0) -> None:
        ZODB.BaseStorage.copy(other, self, verbose)

    # -- two-phase commit --------------------------------------------------

    def tpc_transaction(self) -> Any:
        return self._transaction

    def _check_trans(self, txn: Any, method: str) -> _CommitBuffer:
        if self._is_read_only:
            raise POSException.ReadOnlyError()
        buffer = self._buffer
        if txn is not self._transaction or buffer is None:
            raise POSException.StorageTransactionError(
                "Transaction not committing", method, txn
            )
        if buffer.generation != self._manager.generation:
            raise ClientDisconnected(method, "on a disconnected transaction")
        return buffer

    def tpc_begin(self, txn: Any, tid: bytes | None = None, status: str = " ") -> None:
        if self._is_read_only:
            raise POSException.ReadOnlyError()
        if txn is self._transaction:
            raise POSException.StorageTransactionError(
                "Duplicate tpc_begin calls for same transaction"
            )
        if not self._manager.operational:
            # A server restart looks like a pause, as with ZEO: wait for the
            # connection, up to wait_timeout, then fail.
            self._thread.run(self._manager.operational_link(self._wait_timeout))
        self._commit_lock.acquire()
        try:
            if not self._manager.operational:
                raise ClientDisconnected("tpc_begin while disconnected")
            buffer = _CommitBuffer(self._manager.generation)
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

    # -- blobs -----------------------------------------------------------

    def _blob_files(self) -> BlobFiles:
        if self._blobs is None:
            raise POSException.Unsupported("No blob cache directory is configured.")
        return self._blobs

    def temporaryDirectory(self) -> str:
        return self._blob_files().temp_dir

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
        buffer = self._check_trans(txn, "storeBlob")
        path = blobs.adopt(oid, serial or b"\0" * 8, blobfilename)
        buffer.blobs.append((oid, path))
        self.store(oid, serial, data, "", txn)
        if blobs.shared:
            name = os.path.basename(path)
            self._send(buffer, "storeBlobShared", oid, serial, data, name, id(txn))
            return
        if buffer.generation != self._manager.generation:
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

    def loadBlob(self, oid: bytes, serial: bytes) -> str:
        blobs = self._blob_files()
        path = blobs.cached(oid, serial)
        if path is not None:
            return path
        if blobs.shared:
            raise POSException.POSKeyError("No blob file", oid, serial)
        with blobs.download_lock(oid, serial):
            if blobs.cached(oid, serial) is None:
                self._call("sendBlob", oid, serial)  # streamed before the reply
        path = blobs.cached(oid, serial)
        if path is None:
            raise POSException.POSKeyError("No blob file", oid, serial)
        blobs.downloaded()
        return path

    def openCommittedBlobFile(self, oid: bytes, serial: bytes, blob: Any = None) -> Any:
        for attempt in range(2):
            path = self.loadBlob(oid, serial)
            try:
                if blob is None:
                    return open(path, "rb")  # noqa: SIM115 (the caller closes it)
                return ZODB.blob.BlobFile(path, "r", blob)
            except FileNotFoundError:  # pruned between load and open
                if attempt:
                    raise
        raise AssertionError("unreachable")

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

    def _vote_rounds(self, txn: Any, buffer: _CommitBuffer) -> None:
        for _ in range(_VOTE_ROUNDS):
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
        self, txn: Any, buffer: _CommitBuffer, conflict: dict[str, Any]
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
            if buffer.generation == self._manager.generation:
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
