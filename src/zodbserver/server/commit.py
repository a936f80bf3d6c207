"""Commit serialisation: the per-storage commit lock and pending transactions.

A client's ``tpc_begin`` and stores are buffered in its session as a
``PendingTransaction`` (in memory, or past a threshold in a spool file:
``spool``); the storage sees nothing until the client votes.
``vote`` waits for the storage's ``CommitLock`` -- first come, first served
-- and only the holder replays its buffer into the storage, votes and, later,
finishes.  The lock is released on finish, on abort, when the vote fails,
when the holder's connection is lost, or when the holder exceeds the
transaction timeout (which closes its connection).

The lock lives on the event loop; waiting for it never blocks the loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Final, Protocol, TypedDict

from ZODB.Connection import TransactionMetaData

from .commit_times import CommitClock
from .settings import ServerSettings
from .spool import Operation, Spool, SpoolLocation
from .transaction_state import TransactionState


class LockHolder(Protocol):
    #: Who holds or waits, for the status page and the logs.
    @property
    def label(self) -> str: ...

    def on_transaction_timeout(self) -> None: ...


class CommitLock:
    """A FIFO lock with an optional hold timeout, owned by the event loop."""

    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = timeout
        self.holder: LockHolder | None = None
        self.locked_since: float | None = None
        self._waiters: deque[tuple[LockHolder, asyncio.Future[None]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        return sum(1 for _, future in self._waiters if not future.done())

    @property
    def queue(self) -> list[LockHolder]:
        """The holders waiting, first come first."""
        return [holder for holder, future in self._waiters if not future.done()]

    def is_waiting(self, holder: LockHolder) -> bool:
        return any(h is holder and not f.done() for h, f in self._waiters)

    async def acquire(self, holder: LockHolder) -> None:
        if self.holder is None and (not self._waiters or not self.waiting):
            self._grant(holder)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((holder, future))
        try:
            await future
        except asyncio.CancelledError:
            # Granted just as we were cancelled: pass it on.
            if self.holder is holder:
                self.release(holder)
            raise

    def release(self, holder: LockHolder) -> None:
        """Release the lock if ``holder`` has it, or stop its wait."""
        if self.holder is not holder:
            kept: deque[tuple[LockHolder, asyncio.Future[None]]] = deque()
            for waiter, future in self._waiters:
                if waiter is holder:
                    future.cancel()
                else:
                    kept.append((waiter, future))
            self._waiters = kept
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.holder = None
        self.locked_since = None
        while self._waiters:
            waiter, future = self._waiters.popleft()
            if not future.done():
                self._grant(waiter)
                future.set_result(None)
                return

    def _grant(self, holder: LockHolder) -> None:
        self.holder = holder
        self.locked_since = time.time()
        if self.timeout is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.timeout, holder.on_transaction_timeout)


#: What a buffered operation costs in memory besides its data (its tuple,
#: its oid and serial), counted towards the spool threshold so that a
#: transaction of many deletes or read checks is bounded too.
OPERATION_OVERHEAD: Final = 128


@dataclass
class PendingTransaction:
    """What one client sent between ``tpc_begin`` and its vote.

    The operations are kept in ``operations`` until their data (the
    ``size`` given to ``add``, and ``OPERATION_OVERHEAD`` each) passes
    ``spool_threshold`` bytes; then all of them go to a ``Spool`` file at
    ``spool_location`` (``spool``), and so do the later ones.  The event
    loop adds; the storage thread replays (``replay``).
    """

    token: Hashable
    metadata: TransactionMetaData
    tid: bytes | None = None
    status: str = " "
    spool_threshold: int = ServerSettings.transaction_spool_threshold
    spool_location: SpoolLocation = field(default_factory=SpoolLocation)
    #: The operations, in order, until they are spooled.
    operations: list[Operation] = field(default_factory=list)
    #: Bytes counted towards ``spool_threshold`` so far.
    buffered: int = 0
    spool: Spool | None = None
    #: (oid, serial, data, path): replayed after ``operations``, so that a
    #: blob store wins over the plain store ZEO clients send before it.
    blobs: list[tuple[bytes, bytes | None, bytes, str]] = field(default_factory=list)
    state: TransactionState = field(default_factory=TransactionState)
    clock: CommitClock = field(default_factory=CommitClock)
    #: The first write of this transaction's files that failed (a blob
    #: upload's, in the connection's ``FileWriter``): its vote fails.
    write_error: Exception | None = None

    def write_failed(self, error: Exception) -> None:
        """A write of this transaction's files failed (on the event loop)."""
        if self.write_error is None:
            self.write_error = error

    def add(self, operation: Operation, size: int = 0) -> None:
        """Buffer ``operation``, whose data is ``size`` bytes (on the event
        loop)."""
        if self.spool is None:
            self.operations.append(operation)
            self.buffered += size + OPERATION_OVERHEAD
            if self.buffered > self.spool_threshold:
                self._spill()
        else:
            self.spool.add(operation)

    def _spill(self) -> None:
        spool = self.spool_location.create()
        try:
            for operation in self.operations:
                spool.add(operation)
        except BaseException:
            spool.close()
            raise
        self.spool = spool
        self.operations = []

    def replay(self) -> Iterator[Operation]:
        """The operations, in the order they were added (in the storage
        thread, which owns the transaction during its vote)."""
        if self.spool is None:
            return iter(self.operations)
        return iter(self.spool)

    def close(self) -> None:
        """Remove the spool file, if any (when the transaction ends)."""
        spool, self.spool = self.spool, None
        if spool is not None:
            spool.close()


class Conflict(TypedDict):
    """A conflict the client resolves (client-side conflict resolution)."""

    oid: bytes
    #: ``(committed_serial, old_serial)``, as in ZODB's ``ConflictError``.
    serials: tuple[bytes, bytes]
    #: The data the client stored.
    data: bytes


@dataclass
class VoteResult:
    """What a replay-and-vote in the storage thread produced."""

    resolved: list[bytes]
    invalidated: list[bytes]
    conflicts: list[Conflict]
    #: Bytes of object data stored.
    size: int = 0
