"""Commit serialisation: the per-storage commit lock and pending transactions.

A client's ``tpc_begin`` and stores are buffered in its session as a
``PendingTransaction``; the storage sees nothing until the client votes.
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
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, TypedDict

from ZODB.Connection import TransactionMetaData

from .commit_times import CommitClock
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


# Operations buffered before the vote, replayed in order under the lock:
# tuples whose first item names the operation.
STORE: Final = "store"
CHECK_READ: Final = "checkread"
DELETE: Final = "delete"
RESTORE: Final = "restore"
UNDO: Final = "undo"

#: ``(STORE, oid, serial, data)``; no serial for a new object.
Store = tuple[Literal["store"], bytes, bytes | None, bytes]
#: ``(CHECK_READ, oid, serial)``
CheckRead = tuple[Literal["checkread"], bytes, bytes | None]
#: ``(DELETE, oid, serial)``
Delete = tuple[Literal["delete"], bytes, bytes]
#: ``(RESTORE, oid, serial, data, prev_txn)``
Restore = tuple[Literal["restore"], bytes, bytes, bytes | None, bytes | None]
#: ``(UNDO, transaction_id)``
Undo = tuple[Literal["undo"], bytes]
Operation = Store | CheckRead | Delete | Restore | Undo


@dataclass
class PendingTransaction:
    """What one client sent between ``tpc_begin`` and its vote."""

    token: Hashable
    metadata: TransactionMetaData
    tid: bytes | None = None
    status: str = " "
    operations: list[Operation] = field(default_factory=list)
    #: (oid, serial, data, path): replayed after ``operations``, so that a
    #: blob store wins over the plain store ZEO clients send before it.
    blobs: list[tuple[bytes, bytes | None, bytes, str]] = field(default_factory=list)
    state: TransactionState = field(default_factory=TransactionState)
    clock: CommitClock = field(default_factory=CommitClock)

    def add(self, operation: Operation) -> None:
        self.operations.append(operation)


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
