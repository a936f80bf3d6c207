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
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypedDict, TypeVar

import zope.interface
from ZODB.POSException import ConflictError
from ZODB.serialize import referencesf
from ZODB.utils import z64

from ..errors import ConfigurationError
from .access import AccessRules, load_rules
from .commit import CommitLock
from .commit_times import CommitTimes
from .invalidations import InvalidationQueue
from .mvcc import MVCCHosting, is_mvcc
from .recovery import forget_unfinished_transaction
from .replication import Replication
from .replication_control import ReplicationControl
from .settings import ServerSettings
from .spool import SpoolLocation
from .status import ClientSnapshot, StorageStats, StorageStatus
from .storage_api import ServedStorage
from .storage_thread import StorageThread
from .tasks import ServerTasks
from .traffic import Traffic

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SizeInfo(TypedDict):
    """The ``info`` a client is sent after each commit and pack."""

    length: int
    size: int


class StorageInfo(SizeInfo):
    """``get_info``'s answer, in ZEO's keys."""

    name: str
    supportsUndo: bool
    supports_record_iternext: bool
    #: ``(module, name)`` of every interface the storage provides.
    interfaces: tuple[tuple[str, str], ...]


class Subscriber(Protocol):
    """What a hosted storage needs of a session registered with it."""

    def invalidate(self, tid: bytes, oids: list[bytes]) -> None: ...

    def send_async(self, method: str, args: tuple[Any, ...]) -> None: ...

    def close_connection(self, reason: str) -> None: ...

    def access_changed(self) -> None: ...

    #: It asked to write and was served read-only.
    wanted_write: bool

    def describe(self) -> str: ...

    def snapshot(self) -> ClientSnapshot: ...


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


class HostedStorage:
    """One storage, as all of its clients share it."""

    def __init__(
        self, name: str, storage: ServedStorage, settings: ServerSettings
    ) -> None:
        self.name = name
        #: An ``IMVCCStorage`` is served through instances of its own
        #: (``mvcc``); None for every other storage.
        self.mvcc: MVCCHosting | None = None
        if is_mvcc(storage):
            if settings.replicate_from is not None:
                raise ConfigurationError(
                    f"storage {name!r}: a replica cannot follow into a "
                    "storage that has replicas of its own (its database)"
                )
            storage = self.mvcc = MVCCHosting(storage)
        self.storage = storage
        self.settings = settings
        #: Reads may wait on something slower than the page cache (a
        #: database server): they are answered from worker threads.
        self.reads_wait = self.mvcc is not None
        #: Clients may not write: a read-only server or storage, a replica,
        #: a primary not yet sure it was not replaced (``fencing``).
        self.read_only = (
            settings.read_only
            or bool(storage.isReadOnly())
            or settings.replicate_from is not None
        )
        forget_unfinished_transaction(name, storage)
        #: Where transactions past the spool threshold keep their stores.
        self.spool_location = SpoolLocation.of(storage)
        # Spool files of a server that was killed during a transaction: no
        # one reads them, and no transaction of ours has begun yet.
        self.spool_location.remove_stale()
        self.commit_lock = CommitLock(settings.transaction_timeout)
        self.stats = StorageStats()
        self.commit_times = CommitTimes()
        self.sessions: set[Subscriber] = set()
        self.invalidations = InvalidationQueue.from_storage(
            settings.invalidation_queue_size,
            storage,
            storage.lastTransaction() or z64,
        )
        self._worker = StorageThread(f"storage {name}")
        #: Storage calls running in the worker thread (shutdown waits for them).
        self.running: set[asyncio.Future[Any]] = set()
        #: Finishes among them: a load may wait for one (``submit_finish``).
        self.finishing: set[asyncio.Future[Any]] = set()
        #: Set as the storage closes: the services stop calling it.
        self.closing = False
        #: Packs begun: an iterator begun before one cannot go on.
        self.packs = 0
        #: The replicas following this storage, and what they confirmed.
        self.replication = Replication(self)
        if settings.client_conflict_resolution:
            storage.tryToResolveConflict = _refuse_conflict_resolution

    def attach(self, loop: asyncio.AbstractEventLoop, tasks: ServerTasks) -> None:
        """Start serving on ``loop``: tell the storage about us."""
        if self.mvcc is not None:
            wake = asyncio.Event()
            if self.mvcc.notices is not None:
                self.mvcc.notices.start(lambda: loop.call_soon_threadsafe(wake.set))
            tasks.spawn(self._look_for_changes(wake), service=True)
            return
        register = getattr(self.storage, "registerDB", None)
        if register is not None:
            register(_StorageEvents(self, loop))

    async def _look_for_changes(self, wake: asyncio.Event) -> None:
        """Have the storage thread look for what other processes committed,
        every ``database_poll_interval`` seconds and whenever another server
        says it committed (``wake``)."""
        mvcc = self.mvcc
        assert mvcc is not None
        interval = self.settings.database_poll_interval
        failing = False
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), interval)
            wake.clear()
            if self.closing:
                return
            try:
                await self.submit(mvcc.look_for_changes)
            except Exception as error:
                if self.closing:
                    return
                # Once per outage, not at every look.
                if not failing:
                    logger.error(
                        "storage %r: cannot look for commits of other "
                        "servers (retrying every %s s): %s",
                        self.name,
                        interval,
                        error,
                    )
                failing = True
            else:
                if failing:
                    logger.info(
                        "storage %r: looking for commits of other servers again",
                        self.name,
                    )
                failing = False

    async def catch_up(self) -> None:
        """Publish what other servers on the same database committed until
        now (``mvcc``); nothing to do for other storages."""
        if self.mvcc is not None:
            await self.submit(self.mvcc.look_for_changes)

    def _publish_found(self, _: asyncio.Future[Any]) -> None:
        """Publish the commits of other processes that a storage-thread call
        found, before whoever waits for the call resumes."""
        mvcc = self.mvcc
        assert mvcc is not None
        found = mvcc.found
        while found:
            tid, oids = found.popleft()
            if oids is None:
                self.reset_clients()
            else:
                self.publish_commit(None, tid, oids)

    def submit(self, function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue a storage call for this storage's transaction thread.

        Calls run one at a time in the order they were submitted: a call
        submitted after another never sees the storage before that one ends.
        """
        future = self._worker.submit(asyncio.get_running_loop(), function, args)
        if self.mvcc is not None:
            # First of the future's callbacks: before its waiter resumes.
            future.add_done_callback(self._publish_found)
        self.running.add(future)
        future.add_done_callback(self.running.discard)
        return future

    def submit_finish(
        self, function: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        """``submit`` a finish, kept in ``finishing`` until it is done:
        FileStorage's finish keeps loads waiting across its fsync, which
        votes and aborts do not."""
        future = self.submit(function, *args)
        self.finishing.add(future)
        future.add_done_callback(self.finishing.discard)
        return future

    async def in_worker(self, function: Callable[..., T], *args: Any) -> T:
        """Run a storage call in this storage's transaction thread."""
        return await self.submit(function, *args)

    # -- what clients are told ------------------------------------------

    @property
    def last_tid(self) -> bytes:
        """The storage's last transaction, as this server published it --
        without calling into the storage, whose ``lastTransaction`` may
        wait for a finish's lock (FileStorage's does)."""
        return self.invalidations.latest_tid

    def info(self) -> StorageInfo:
        storage = self.storage
        interfaces = tuple(
            (iface.__module__, iface.__name__)
            for iface in zope.interface.providedBy(storage).__iro__
        )
        supports_undo: Callable[[], bool] | None = getattr(
            storage, "supportsUndo", None
        )
        return {
            "length": len(storage),
            "size": storage.getSize(),
            "name": storage.getName(),
            "supportsUndo": bool(supports_undo and supports_undo()),
            "supports_record_iternext": hasattr(storage, "record_iternext"),
            "interfaces": interfaces,
        }

    def size_info(self) -> SizeInfo:
        return {"length": len(self.storage), "size": self.storage.getSize()}

    def status(self) -> StorageStatus:
        lock = self.commit_lock
        return self.stats.report(
            connections=len(self.sessions),
            waiting=lock.waiting,
            lock_time=lock.locked_since,
            timeout_active=lock.timeout is not None,
            last_transaction=self.last_tid,
        )

    def publish_commit(
        self, committer: Subscriber | None, tid: bytes, oids: Iterable[bytes]
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
        self.replication.committed(tid)

    def reconnect_waiting_writers(self) -> None:
        """The storage became writable: disconnect the clients that asked
        to write and were served read-only, so that they come back
        writable (ZEO's ``read_only_fallback`` clients stay read-only on a
        connection they made so)."""
        for session in list(self.sessions):
            if session.wanted_write:
                session.close_connection("the storage is writable now; reconnect")

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
        self.closing = True
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

    def invalidateCache(self) -> None:
        self._loop.call_soon_threadsafe(self._hosted.reset_clients)

    def transform_record_data(self, data: bytes) -> bytes:
        return data

    def untransform_record_data(self, data: bytes) -> bytes:
        return data


class StorageServer:
    """Every hosted storage, by the name clients register with."""

    def __init__(
        self, storages: Mapping[str, ServedStorage], settings: ServerSettings
    ) -> None:
        if not storages:
            raise ValueError("a server needs at least one storage")
        self.settings = settings
        #: Owns every background task and worker thread of this server.
        self.tasks = ServerTasks(settings.worker_threads)
        #: Bytes, refusals and protocol errors of every connection.
        self.traffic = Traffic()
        self.hosted = {
            name: HostedStorage(name, storage, settings)
            for name, storage in storages.items()
        }
        #: Per encoding, the last ``(tid, oids, frame)`` of an invalidation
        #: sent: the sessions a commit is published to share one encoded
        #: frame (``transport``); emptied once the loop is done publishing.
        self.shared_invalidations: dict[bytes | None, tuple[bytes, Any, bytes]] = {}
        #: This server's role: primary, or replica of ``replicate_from``.
        self.replication = ReplicationControl(self)
        #: Who may do what (``access``); None: everyone everything.
        self.access: AccessRules | None = None
        if settings.access_rules is not None:
            self.access = load_rules(settings.access_rules)

    def reload_access(self) -> None:
        """Read the access rules again and apply them to every client
        already registered; keep the old rules if the file is bad."""
        if self.settings.access_rules is None:
            return
        try:
            self.access = load_rules(self.settings.access_rules)
        except ConfigurationError as error:
            logger.error("access rules not reloaded, keeping the old ones: %s", error)
            return
        logger.info("access rules reloaded from %s", self.settings.access_rules)
        for hosted in self.hosted.values():
            for session in list(hosted.sessions):
                session.access_changed()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        for hosted in self.hosted.values():
            hosted.attach(loop, self.tasks)

    async def promote(self) -> dict[str, Any]:
        return await self.replication.promote()

    def replication_status(self) -> dict[str, Any]:
        return self.replication.status()

    def ruok(self) -> dict[str, StorageStatus]:
        return {name: hosted.status() for name, hosted in self.hosted.items()}

    def close_storages(self) -> None:
        """Close every storage (blocking: call it from a thread)."""
        for name, hosted in self.hosted.items():
            logger.info("closing storage %r", name)
            try:
                hosted.close()
            except Exception:
                logger.exception("closing storage %r failed", name)
