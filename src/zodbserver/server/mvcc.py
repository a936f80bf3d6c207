"""Serving an ``IMVCCStorage`` (RelStorage) to many clients at once.

RelStorage is built for one ZODB connection per storage instance: each
instance (``new_instance``) has database sessions of its own and sees the
database as of the snapshot it last polled.  The server is one "database"
to all of its clients, so ``MVCCHosting`` turns the storage into what the
server needs (``storage_api.ServedStorage``) out of several instances:

* the *commit instance* makes every client's transactions, one at a time,
  in the hosted storage's thread, which owns it;
* *reader instances* (``ReaderPool``) answer reads, each lent to one read
  at a time in the server's worker threads, and moved to a newer snapshot
  whenever the server has told its clients of a newer transaction than the
  one the instance sees;
* the *change feed* (``ChangeFeed``), a database session of its own,
  finds the transactions other processes -- other servers on the same
  database -- committed since it last looked.  It too is owned by the
  storage thread: it looks when asked to (``look``) and during each vote,
  while this server holds the database's commit lock, so that every
  transaction another process committed before ours is found before ours
  is published, and ours is never found again.

What the feed finds is queued in ``found`` and published by the hosted
storage on the event loop as the storage-thread call that found it ends,
before that call's caller resumes (``HostedStorage.submit``): clients are
told of every transaction in tid order, their own commits included, and
never twice.  The feed reports what changed since its previous look as
one invalidation at the newest tid it saw; a client only ever sees the
database at the tids it was told of, so the transactions in between need
not be told apart.

The attributes documented as thread-safe may be used from any thread; the
rest belong to the storage thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import zope.interface
from ZODB.interfaces import IMVCCStorage
from ZODB.POSException import (
    ConflictError,
    MultipleUndoErrors,
    POSError,
    POSKeyError,
    UndoError,
)
from ZODB.utils import p64, u64

from .commit_notices import commit_notices
from .storage_api import LoadResult

logger = logging.getLogger(__name__)

#: Seconds between refreshes of the object count and size that clients are
#: sent after each commit (each costs the database a query).
SIZE_REFRESH = 10.0


def is_mvcc(storage: Any) -> bool:
    """The storage gives every connection an instance of its own."""
    return bool(IMVCCStorage.providedBy(storage))


class ReaderPool:
    """Instances of one storage lent to one read each (thread-safe).

    Instances are made as reads need them, at most one per thread that
    reads at once (the server's worker threads bound that), and kept.  An
    instance lent is moved to a new snapshot when the one it has is older
    than the caller needs, or older than the last ``renew``."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        #: Idle instances, with the generation of their snapshot.
        self._idle: list[tuple[Any, int]] = []
        self._all: list[Any] = []
        self._generation = 0
        self._lock = threading.Lock()

    def renew(self) -> None:
        """Snapshots taken until now are stale (a pack removed revisions
        they still see)."""
        with self._lock:
            self._generation += 1

    @contextlib.contextmanager
    def lend(self, at_least: int) -> Iterator[Any]:
        """An instance that sees at least transaction ``at_least``."""
        with self._lock:
            generation = self._generation
            instance, seen = self._idle.pop() if self._idle else (None, -1)
        if instance is None:
            instance = self._storage.new_instance()
            with self._lock:
                self._all.append(instance)
        if seen != generation or instance.lastTransactionInt() < at_least:
            _refresh(instance)
        try:
            yield instance
        except BaseException:
            # Its session may be broken (the database restarted): the next
            # read starts from a new snapshot.
            generation = -1
            with contextlib.suppress(Exception):
                instance.sync()
            raise
        finally:
            with self._lock:
                self._idle.append((instance, generation))

    def __len__(self) -> int:
        return len(self._all)

    def release(self) -> None:
        with self._lock:
            instances, self._all, self._idle = self._all, [], []
        for instance in instances:
            with contextlib.suppress(Exception):
                instance.release()


@contextlib.contextmanager
def zodb_errors() -> Iterator[None]:
    """Raise the storage's own subclasses of ZODB's errors (RelStorage's
    ``POSKeyError``, say) as the ZODB class they extend: clients know that
    one, and need not have the storage's package to read the error."""
    try:
        yield
    except MultipleUndoErrors:
        raise
    except UndoError as error:
        # As FileStorage reports it: the one undo error ZEO 6's client can
        # read over msgpack.
        raise MultipleUndoErrors([(error._reason, error._oid)]) from error
    except POSError as error:
        base: type[BaseException] = next(
            cls for cls in type(error).__mro__ if cls.__module__ in _KNOWN_MODULES
        )
        if base is type(error):
            raise
        translated = BaseException.__new__(base)
        translated.args = error.args
        translated.__dict__.update(error.__dict__)
        raise translated from error


#: Where the errors clients can read come from.
_KNOWN_MODULES = frozenset({"ZODB.POSException", "transaction.interfaces", "builtins"})


def _resolve_from_history(instance: Any) -> None:
    """Have ``instance``'s votes resolve conflicts from the revisions the
    clients started from.

    RelStorage reads the revision a conflicting store started from as the
    object's current state in the instance's own snapshot: for a ZODB
    connection, that is the snapshot it read the object in.  The commit
    instance serves clients with snapshots of their own, so its votes read
    that revision by its tid instead: from RelStorage's cache, which the
    instances share and the client's own load of it went through, or from
    the database.  Where neither has it (history-free, since overwritten
    and evicted), the conflict cannot be resolved and the client gets
    ``ConflictError``.
    """
    cache = instance._cache
    cache.__class__ = _resolving_cache_class(type(cache))


def _resolving_cache_class(base: type) -> type:
    def prefetch_for_conflicts(
        self: Any, cursor: Any, oid_tid_pairs: Iterable[tuple[int, int]]
    ) -> dict[int, tuple[bytes, int]]:
        mover = self.adapter.mover
        states = {}
        for oid_int, tid_int in oid_tid_pairs:
            state = self.loadSerial(oid_int, tid_int) or mover.load_revision(
                cursor, oid_int, tid_int
            )
            if state is None:
                raise ConflictError(oid=p64(oid_int), serials=(None, p64(tid_int)))
            states[oid_int] = (state, tid_int)
        return states

    return type(
        f"Resolving{base.__name__}",
        (base,),
        {"__slots__": (), "prefetch_for_conflicts": prefetch_for_conflicts},
    )


def _refresh(instance: Any) -> None:
    """Move ``instance`` to the database's current snapshot."""
    instance.sync()
    instance.poll_invalidations()


class ChangeFeed:
    """Finds the transactions committed since it last looked, through a
    database session of its own (RelStorage's ``IPoller``)."""

    def __init__(self, storage: Any) -> None:
        adapter = storage._adapter
        self._connmanager = adapter.connmanager
        self._poller = adapter.poller
        self._disconnected = adapter.driver.disconnected_exceptions
        self._conn: Any = None
        self._cursor: Any = None
        #: Every transaction up to this one is known to the server.
        self.tid = self._with_session(self._poller.get_current_tid)

    def _with_session(self, function: Callable[[Any], Any]) -> Any:
        try:
            if self._conn is None:
                self._conn, self._cursor = self._connmanager.open_for_load()
            else:
                self._connmanager.restart_load(self._conn, self._cursor)
            return function(self._cursor)
        except self._disconnected:
            # The database went away: the next look opens a new session.
            self.close()
            raise

    def look(self) -> tuple[int, set[bytes] | None] | None:
        """``(newest tid, oids changed)`` since the last look -- the oids are
        None if the feed cannot tell (the database went back in time) --
        or None when nothing was committed."""

        def poll(cursor: Any) -> tuple[Any, int]:
            rows, tid = self._poller.poll_invalidations(self._conn, cursor, self.tid)
            return (None if rows is None else list(rows)), tid

        rows, tid = self._with_session(poll)
        if tid == self.tid:
            return None
        self.tid = tid
        if rows is None:
            return tid, None
        return tid, {p64(oid) for oid, _ in rows}

    def close(self) -> None:
        if self._conn is not None:
            conn, cursor, self._conn, self._cursor = (
                self._conn,
                self._cursor,
                None,
                None,
            )
            with contextlib.suppress(Exception):
                self._connmanager.close(conn, cursor)


class _InstanceIterator:
    """A storage instance's transaction iterator that releases the instance
    once it is exhausted, or when collected."""

    def __init__(self, instance: Any, start: bytes | None, stop: bytes | None) -> None:
        self._instance: Any = instance
        self._transactions = iter(instance.iterator(start, stop))

    def __iter__(self) -> _InstanceIterator:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._transactions)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        instance, self._instance = self._instance, None
        if instance is not None:
            with contextlib.suppress(Exception):
                instance.release()

    __del__ = close


class MVCCHosting:
    """An ``IMVCCStorage`` as one storage the server hosts."""

    #: Reads wait for the database: the server answers them in threads.
    reads_wait = True

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        self._commit = storage.new_instance()
        _resolve_from_history(self._commit)
        self._readers = ReaderPool(storage)
        self._feed = ChangeFeed(storage)
        #: Wakes the servers on the same database when one commits (None:
        #: they only poll).
        self.notices = commit_notices(storage)
        #: Thread-safe: transactions of others, ``(tid, oids)`` in tid
        #: order (oids None: every object may have changed), not yet
        #: published; ``HostedStorage`` takes them on the loop.
        self.found: deque[tuple[bytes, list[bytes] | None]] = deque()
        #: Thread-safe (read anywhere, set in the storage thread): the
        #: newest transaction the server may have told clients of.
        self._visible = self._feed.tid
        self._sizes = (0, 0)
        self._sizes_at = 0.0
        self._refresh_sizes()
        # What clients are told the storage provides (``get_info``): all
        # that the storage does but hand out instances -- a client storage
        # is one instance.
        zope.interface.directlyProvides(
            self,
            [
                iface
                for iface in zope.interface.providedBy(self._commit)
                if not iface.isOrExtends(IMVCCStorage)
            ],
        )

    # -- what the server asks of every storage

    @property
    def tryToResolveConflict(self) -> Callable[..., bytes]:
        resolve: Callable[..., bytes] = self._commit.tryToResolveConflict
        return resolve

    @tryToResolveConflict.setter
    def tryToResolveConflict(self, resolve: Callable[..., bytes]) -> None:
        self._commit.tryToResolveConflict = resolve

    def __len__(self) -> int:
        return self._sizes[0]

    def getSize(self) -> int:
        return self._sizes[1]

    def _refresh_sizes(self) -> None:
        self._sizes = (len(self._commit), self._commit.getSize())
        self._sizes_at = time.monotonic()

    def getName(self) -> str:
        name: str = self._storage.getName()
        return name

    def sortKey(self) -> str:
        key: str = self._storage.sortKey()
        return key

    def isReadOnly(self) -> bool:
        return bool(self._storage.isReadOnly())

    def lastTransaction(self) -> bytes:
        tid: bytes = p64(self._visible)
        return tid

    def supportsUndo(self) -> bool:
        supports = getattr(self._storage, "supportsUndo", None)
        return bool(supports and supports())

    def close(self) -> None:
        if self.notices is not None:
            self.notices.close()
        self._feed.close()
        self._readers.release()
        with contextlib.suppress(Exception):
            self._commit.release()
        self._storage.close()

    # -- the change feed (storage thread)

    def look_for_changes(self) -> None:
        """Queue what other processes committed since the last look; every
        so often, refresh the object count and size too."""
        self._take(self._feed.look())
        if time.monotonic() - self._sizes_at > SIZE_REFRESH:
            self._refresh_sizes()

    def _take(self, change: tuple[int, set[bytes] | None] | None) -> None:
        if change is None:
            return
        tid, oids = change
        self.found.append((p64(tid), None if oids is None else list(oids)))
        self._visible = tid

    # -- reads (any thread)

    def load_before(self, oid: bytes, before: bytes) -> tuple[LoadResult, bytes]:
        """``loadBefore``, and the tid of the snapshot it was read in."""
        with zodb_errors(), self._readers.lend(self._visible) as reader:
            # The current revision, from RelStorage's cache where it can.
            try:
                data, tid = reader.load(oid)
            except POSKeyError:
                tid = None
            if tid is not None and tid < before:
                result: LoadResult = (data, tid, None)
            else:
                result = reader.loadBefore(oid, before)
            return result, reader.lastTransaction()

    def loadBefore(self, oid: bytes, before: bytes) -> LoadResult:
        return self.load_before(oid, before)[0]

    def _read(self, method: str, *args: Any) -> Any:
        with zodb_errors(), self._readers.lend(self._visible) as reader:
            return getattr(reader, method)(*args)

    def loadSerial(self, oid: bytes, serial: bytes) -> bytes:
        data: bytes = self._read("loadSerial", oid, serial)
        return data

    def getTid(self, oid: bytes) -> bytes:
        tid: bytes = self._read("getTid", oid)
        return tid

    def history(self, oid: bytes, size: int = 1) -> list[dict[str, Any]]:
        with zodb_errors(), self._readers.lend(self._visible) as reader:
            # RelStorage's has ZODB 3's ``version`` argument before ``size``.
            history: list[dict[str, Any]] = reader.history(oid, size=size)
        return history

    def record_iternext(self, next_oid: bytes | None = None) -> Any:
        return self._read("record_iternext", next_oid)

    def new_oid(self) -> bytes:
        """(storage thread) From the commit instance: a reader would open
        a write session of its own for it."""
        with zodb_errors():
            oid: bytes = self._commit.new_oid()
        return oid

    def undoLog(self, first: int, last: int) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = self._read("undoLog", first, last)
        return log

    def undoInfo(
        self, first: int, last: int, specification: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        info: list[dict[str, Any]] = self._read("undoInfo", first, last, specification)
        return info

    def loadBlob(self, oid: bytes, serial: bytes) -> str:
        path: str = self._read("loadBlob", oid, serial)
        return path

    def temporaryDirectory(self) -> str:
        directory: str = self._storage.temporaryDirectory()
        return directory

    def iterator(
        self, start: bytes | None = None, stop: bytes | None = None
    ) -> _InstanceIterator:
        """Transactions, read through an instance of their own."""
        return _InstanceIterator(self._storage.new_instance(), start, stop)

    def pack(self, t: float, referencesf: Callable[[bytes], list[bytes]]) -> None:
        instance = self._storage.new_instance()
        try:
            instance.pack(t, referencesf)
        finally:
            instance.release()
            self._readers.renew()

    # -- two-phase commit (storage thread)

    def tpc_begin(
        self, transaction: Any, tid: bytes | None = None, status: str = " "
    ) -> None:
        with zodb_errors():
            # Conflicts are resolved from revisions its snapshot must have:
            # a newer one than it sees was committed by another server.
            if self._commit.lastTransactionInt() < self._visible:
                _refresh(self._commit)
            self._commit.tpc_begin(transaction, tid, status)

    def _in_transaction(self, method: str, *args: Any) -> Any:
        with zodb_errors():
            return getattr(self._commit, method)(*args)

    def store(
        self,
        oid: bytes,
        serial: bytes | None,
        data: bytes,
        version: str,
        transaction: Any,
    ) -> None:
        self._in_transaction("store", oid, serial, data, version, transaction)

    def storeBlob(
        self,
        oid: bytes,
        serial: bytes | None,
        data: bytes,
        blobfilename: str,
        version: str,
        transaction: Any,
    ) -> None:
        self._in_transaction(
            "storeBlob", oid, serial, data, blobfilename, version, transaction
        )

    def restore(
        self,
        oid: bytes,
        serial: bytes,
        data: bytes | None,
        version: str,
        prev_txn: bytes | None,
        transaction: Any,
    ) -> None:
        self._in_transaction(
            "restore", oid, serial, data, version, prev_txn, transaction
        )

    def checkCurrentSerialInTransaction(
        self, oid: bytes, serial: bytes | None, transaction: Any
    ) -> None:
        self._in_transaction(
            "checkCurrentSerialInTransaction", oid, serial, transaction
        )

    def deleteObject(self, oid: bytes, serial: bytes, transaction: Any) -> None:
        self._in_transaction("deleteObject", oid, serial, transaction)

    def undo(
        self, transaction_id: bytes, transaction: Any
    ) -> tuple[bytes, list[bytes]]:
        result: tuple[bytes, list[bytes]] = self._in_transaction(
            "undo", transaction_id, transaction
        )
        return result

    def tpc_vote(self, transaction: Any) -> Iterable[bytes] | None:
        try:
            resolved: Iterable[bytes] | None = self._in_transaction(
                "tpc_vote", transaction
            )
        finally:
            # A vote that succeeds holds the database's commit lock: nothing
            # else commits until this transaction ends, so what the feed
            # finds now is every transaction before this one.  A vote that
            # fails on a conflict with another server's commit has the
            # client told of that commit before it retries.
            self._take(self._feed.look())
        return resolved

    def tpc_finish(
        self, transaction: Any, func: Callable[[bytes], object] = lambda tid: None
    ) -> bytes:
        tid: bytes = self._in_transaction("tpc_finish", transaction, func)
        # Ours: the server publishes it, the feed must not find it again.
        self._feed.tid = u64(tid)
        self._visible = u64(tid)
        if self.notices is not None:
            self.notices.announce()
        return tid

    def tpc_abort(self, transaction: Any) -> None:
        self._in_transaction("tpc_abort", transaction)
