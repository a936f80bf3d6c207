"""``ClientStorage``: the synchronous ZODB storage that talks to a server.

ZODB's ``DB`` calls this object from any number of application threads.
Reads answer from the client cache when they can and otherwise cross to the
connection thread (``connection.ClientThread``) and wait.  Commits are
``TwoPhaseCommit`` (``commit.py``).  Which thread owns what: ``state.py``.

Blobs (``blob_dir``) travel through ``blobs.BlobFiles``: uploaded in chunks
with the commit and downloaded on first load into a private cache, or placed
in a directory shared with the server (``shared_blob_dir``).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
import time
from typing import Any

import ZODB.BaseStorage
import ZODB.blob
import ZODB.interfaces
import zope.interface
from ZODB import POSException
from ZODB.utils import maxtid

from ..addresses import normalize_addresses
from ..errors import ConfigurationError
from .blobs import BlobFiles
from .cache import ClientCache
from .cache_file import CacheFile, SavedCache, cache_path
from .commit import MB, NO_SERVER_BLOBS, CommitBuffer, TwoPhaseCommit
from .connection import ClientThread
from .exceptions import ClientDisconnected
from .iterators import IteratorRegistry, TransactionIterator
from .manager import ConnectionManager
from .state import ConnectionState

logger = logging.getLogger(__name__)

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


@zope.interface.implementer(ZODB.interfaces.IMultiCommitStorage)
class ClientStorage(TwoPhaseCommit):
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
        self.server_sync = server_sync
        self._db: Any = None
        # New oids: the application threads' own, under the lock; batches
        # asked for ahead of need arrive from the connection thread through
        # the queue (an empty batch when the request failed).
        self._oids: collections.deque[bytes] = collections.deque()
        self._oids_requested = False
        self._oids_lock = threading.Lock()
        self._oid_batches: queue.SimpleQueue[list[bytes]] = queue.SimpleQueue()
        self._commit_lock = threading.Lock()
        self._transaction: Any = None
        self._buffer: CommitBuffer | None = None
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
        self._saved_cache: SavedCache | None = None
        path = cache_path(cache, client, var, storage)
        if path is not None:
            self._cache_file = CacheFile(path)
            self._saved_cache = self._cache_file.read()
            if self._saved_cache is not None:
                self._cache.set_last_tid(self._saved_cache.last_tid)
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
                saved=self._saved_cache,
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

    # -- the listener side: called on the connection thread ---------------

    def notify_connected(self, state: ConnectionState) -> None:
        # ``state`` is passed: the first connection may be made before the
        # constructor has even stored the manager.
        interfaces = {tuple(item) for item in state.info.get("interfaces", ())}
        for iface in _OPTIONAL_INTERFACES:
            if (iface.__module__, iface.__name__) in interfaces:
                zope.interface.alsoProvides(self, iface)
        if self._blobs is not None:
            # A blob cache makes this a blob storage even when the server's
            # storage has none, so that a blob commit reaches storeBlob and
            # fails saying what is missing (ZODB's own refusal does not).
            blob_storage = ZODB.interfaces.IBlobStorage
            self._server_blobs = (
                blob_storage.__module__,
                blob_storage.__name__,
            ) in interfaces
            zope.interface.alsoProvides(self, blob_storage)
            if not self._server_blobs:
                logger.warning(NO_SERVER_BLOBS.format(self._storage))
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
                lambda: self._connected and self._manager.state.operational, timeout
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

    # -- identity and state ------------------------------------------------

    def getName(self) -> str:
        state = "connected" if self.is_connected() else "disconnected"
        return f"{self.__name__} ({state})"

    def sortKey(self) -> str:
        address = self._manager.state.server_address
        if address is None:
            raise ClientDisconnected("never connected")
        return f"{self._storage}:{address}"

    def is_connected(self) -> bool:
        return self._manager.state.operational

    @property
    def protocol_version(self) -> bytes | None:
        return self._manager.state.protocol_version

    def getSize(self) -> int:
        return int(self._manager.state.info.get("size", 0))

    def __len__(self) -> int:
        return int(self._manager.state.info.get("length", 0))

    def supportsUndo(self) -> bool:
        return bool(self._manager.state.info.get("supportsUndo"))

    def is_read_only(self) -> bool:
        return self.isReadOnly()

    @property
    def verify_result(self) -> str | None:
        return self._manager.state.verify_result

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
            saved = self._saved_cache
            try:
                # A storage that never connected leaves the file as it was.
                if saved is None or not saved.pending:
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
            if oid in self._manager.readahead.marked:
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
        if self.isReadOnly():
            raise POSException.ReadOnlyError()
        with self._oids_lock:
            self._take_oid_batches()
            if len(self._oids) < _SPARE_OIDS and not self._oids_requested:
                # Ask for the next batch now, so it is here when needed.
                self._oids_requested = True
                deliver = self._oid_batches.put
                self._thread.call_soon(self._manager.request_oids, deliver)
            while not self._oids:  # none spare yet: wait for a batch
                batch = self._call("new_oids")
                self._take_oid_batches()  # asked for earlier: answered first
                self._oids.extend(batch)
            return self._oids.popleft()

    def _take_oid_batches(self) -> None:
        while not self._oid_batches.empty():
            self._oids.extend(self._oid_batches.get())
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
        state = self._manager.state
        if iids and state.operational:
            self._thread.call_soon(
                self._manager.send_calls, [("iterator_gc", (iids,))], state.generation
            )

    def copyTransactionsFrom(self, other: Any, verbose: int = 0) -> None:
        ZODB.BaseStorage.copy(other, self, verbose)

    # -- blobs -----------------------------------------------------------

    def temporaryDirectory(self) -> str:
        return self._blob_files().temp_dir

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
                    return open(path, "rb")
                return ZODB.blob.BlobFile(path, "r", blob)
            except FileNotFoundError:  # pruned between load and open
                if attempt:
                    raise
        raise AssertionError("unreachable")
