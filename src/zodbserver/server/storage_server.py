"""The storages a server hosts, and what their connected sessions share.

A ``StorageServer`` holds one ``HostedStorage`` per storage name.  Each
hosted storage owns the state that every client of that storage shares: its
commit lock, the recent-invalidations queue, the counters, the set of
registered sessions (for invalidation fan-out), and the single worker thread
in which transaction calls (vote with its fsync, finish, abort) run so that
the event loop never blocks on the disk.

All methods here are called on the event loop, except where a docstring
says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import zope.interface
from ZODB.POSException import ConflictError
from ZODB.serialize import referencesf
from ZODB.utils import z64

from .commit import CommitLock
from .invalidations import InvalidationQueue
from .recovery import forget_unfinished_transaction
from .settings import ServerSettings
from .status import StorageStats

if TYPE_CHECKING:
    from .session import Session

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _refuse_conflict_resolution(
    oid: bytes,
    committed_serial: bytes,
    old_serial: bytes,
    new_pickle: bytes,
    committed_data: bytes = b"",
) -> bytes:
    """Stand-in resolver for client-conflict-resolution mode."""
    raise ConflictError(
        oid=oid, serials=(committed_serial, old_serial), data=new_pickle
    )


class StorageThread:
    """One thread that runs a storage's transaction calls, one at a time.

    Cheaper than an executor for the two calls every commit makes (vote,
    finish): a call is one queue put, and its result one
    ``call_soon_threadsafe`` back to the loop that sets an asyncio future --
    no concurrent future, no chained callbacks.  The thread starts with the
    first call, so a server that never commits never pays for it.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(
        self,
        loop: asyncio.AbstractEventLoop,
        function: Callable[..., T],
        args: tuple[Any, ...],
    ) -> asyncio.Future[T]:
        """Queue ``function(*args)``; its outcome completes the future."""
        if self._thread is None:
            # A daemon: an interpreter exiting without ``shutdown`` (an
            # embedding that never stopped its server) must not hang on it.
            self._thread = threading.Thread(
                target=self._run, name=self.name, daemon=True
            )
            self._thread.start()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((loop, future, function, args))
        return future

    def shutdown(self) -> None:
        """Run what is queued, then end the thread (blocking)."""
        if self._thread is not None:
            self._calls.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        calls = self._calls
        while (call := calls.get()) is not None:
            loop, future, function, args = call
            complete: Callable[[asyncio.Future[Any], Any], None]
            try:
                outcome = function(*args)
            except BaseException as exc:  # handed to whoever awaits the future
                if isinstance(exc, StopIteration):  # futures refuse it
                    exc = RuntimeError(f"{function!r} raised StopIteration")
                complete, outcome = _set_exception, exc
            else:
                complete = _set_result
            # A closed loop raises RuntimeError: nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(complete, future, outcome)
            del call, future, outcome, args


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class HostedStorage:
    """One storage, as all of its clients share it."""

    def __init__(self, name: str, storage: Any, settings: ServerSettings) -> None:
        self.name = name
        self.storage = storage
        self.settings = settings
        self.read_only = settings.read_only or bool(storage.isReadOnly())
        forget_unfinished_transaction(name, storage)
        self.commit_lock = CommitLock(settings.transaction_timeout)
        self.stats = StorageStats()
        self.sessions: set[Session] = set()
        self.invalidations = InvalidationQueue.from_storage(
            settings.invalidation_queue_size,
            storage,
            storage.lastTransaction() or z64,
        )
        self._worker = StorageThread(f"storage {name}")
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Storage calls running in the worker thread (shutdown waits for them).
        self.running: set[asyncio.Future[Any]] = set()
        if settings.client_conflict_resolution:
            storage.tryToResolveConflict = _refuse_conflict_resolution

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start serving on ``loop``: tell the storage about us."""
        self._loop = loop
        register = getattr(self.storage, "registerDB", None)
        if register is not None:
            register(_StorageEvents(self, loop))

    def submit(self, function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue a storage call for this storage's transaction thread.

        Calls run one at a time in the order they were submitted: a call
        submitted after another never sees the storage before that one ends.
        """
        future = self._worker.submit(asyncio.get_running_loop(), function, args)
        self.running.add(future)
        future.add_done_callback(self.running.discard)
        return future

    async def in_worker(self, function: Callable[..., T], *args: Any) -> T:
        """Run a storage call in this storage's transaction thread."""
        return await self.submit(function, *args)

    # -- what clients are told ------------------------------------------

    def info(self) -> dict[str, Any]:
        storage = self.storage
        interfaces = tuple(
            (iface.__module__, iface.__name__)
            for iface in zope.interface.providedBy(storage).__iro__
        )
        supports_undo = getattr(storage, "supportsUndo", None)
        return {
            "length": len(storage),
            "size": storage.getSize(),
            "name": storage.getName(),
            "supportsUndo": bool(supports_undo and supports_undo()),
            "supports_record_iternext": hasattr(storage, "record_iternext"),
            "interfaces": interfaces,
        }

    def size_info(self) -> dict[str, int]:
        return {"length": len(self.storage), "size": self.storage.getSize()}

    def status(self) -> dict[str, Any]:
        lock = self.commit_lock
        return self.stats.report(
            connections=len(self.sessions),
            waiting=lock.waiting,
            lock_time=lock.locked_since,
            timeout_active=lock.timeout is not None,
            last_transaction=self.storage.lastTransaction() or z64,
        )

    def publish_commit(
        self, committer: Session | None, tid: bytes, oids: Iterable[bytes]
    ) -> None:
        """Record a commit and tell every other session about it.

        Sessions that registered at or after ``tid`` already start from it
        and must not see it again (their invalidation tids must rise).
        """
        oids = list(oids)
        self.invalidations.append(tid, oids)
        for session in self.sessions:
            if session is not committer:
                session.invalidate(tid, oids)

    def broadcast_info(self) -> None:
        info = self.size_info()
        for session in self.sessions:
            session.send_async("info", (info,))

    def reset_clients(self) -> None:
        """The storage's contents changed behind our back: make clients
        reconnect and verify their caches from scratch."""
        self.invalidations = InvalidationQueue(
            self.settings.invalidation_queue_size,
            self.storage.lastTransaction() or z64,
        )
        for session in list(self.sessions):
            session.close_connection("the storage asked clients to drop caches")

    def close(self) -> None:
        """Close the storage (blocking: call it from a thread)."""
        self._worker.shutdown()
        self.storage.close()


class _StorageEvents:
    """What a storage sees as its "database" (``registerDB``).

    A storage that wraps another server calls ``invalidate`` for commits made
    elsewhere; those reach our clients like our own commits.  Storages call
    these from any thread.
    """

    def __init__(self, hosted: HostedStorage, loop: asyncio.AbstractEventLoop) -> None:
        self._hosted = hosted
        self._loop = loop
        self.references = referencesf

    def invalidate(self, tid: bytes, oids: Iterable[bytes], version: str = "") -> None:
        self._loop.call_soon_threadsafe(
            self._hosted.publish_commit, None, tid, list(oids)
        )

    def invalidateCache(self) -> None:  # noqa: N802 - ZODB's name
        self._loop.call_soon_threadsafe(self._hosted.reset_clients)

    def transform_record_data(self, data: bytes) -> bytes:
        return data

    def untransform_record_data(self, data: bytes) -> bytes:
        return data


class StorageServer:
    """Every hosted storage, by the name clients register with."""

    def __init__(self, storages: Mapping[str, Any], settings: ServerSettings) -> None:
        if not storages:
            raise ValueError("a server needs at least one storage")
        self.settings = settings
        self.hosted = {
            name: HostedStorage(name, storage, settings)
            for name, storage in storages.items()
        }

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        for hosted in self.hosted.values():
            hosted.attach(loop)

    def ruok(self) -> dict[str, Any]:
        return {name: hosted.status() for name, hosted in self.hosted.items()}

    def sessions(self) -> list[Session]:
        return [s for hosted in self.hosted.values() for s in hosted.sessions]

    def close_storages(self) -> None:
        """Close every storage (blocking: call it from a thread)."""
        for name, hosted in self.hosted.items():
            logger.info("closing storage %r", name)
            try:
                hosted.close()
            except Exception:
                logger.exception("closing storage %r failed", name)
