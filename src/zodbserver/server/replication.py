"""A primary's side of replication: the replicas of one storage.

A replica connects like a client, registers read-only and calls
``replicate`` with its history and last transaction
(docs/replication.md).  If its transactions are all the primary's
(``replication_history.compare``), the session becomes a ``ReplicaLink``:
it leaves the storage's client sessions (no invalidations, no ``info``)
and a feed task streams it every transaction after its last one, in commit
order, from the storage itself (``replication_reader``), as async calls::

    replicate_begin(tid, status, user, description, extension_bytes)
    receiveBlobStart/Chunk/Stop(oid, tid)     # a record's blob, first
    replicate_record(oid, data, data_txn, has_blob)
    replicate_end(tid, primary_last_tid)
    replicate_pack(t)                         # after the primary packed

The feed reads a bounded piece at a time and waits for the connection to
drain between pieces, so catching up on a database of any size takes
bounded memory on both sides.  Once it has sent everything it waits for
the next commit.  The replica answers each transaction it has on disk with
``replicated(tid)``; those acknowledgements tell the primary its replicas'
lag and let ``tpc_finish`` wait for them (``sync-replicas``).

``Replication`` is owned by its ``HostedStorage`` and used on the event
loop only.  Each feed task is owned by the session of its replica, which
cancels it when the connection ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from ZODB.POSException import StorageError
from ZODB.TimeStamp import TimeStamp
from ZODB.utils import z64

from .replication_history import History
from .replication_reader import TransactionReader
from .replication_state import ReplicationState

if TYPE_CHECKING:
    from .storage_server import HostedStorage
    from .tasks import ServerTasks

logger = logging.getLogger(__name__)

#: What ``sync-replicas-missing`` may say.
FAIL = "fail"
ASYNC = "async"


class ReplicaPeer(Protocol):
    """What a feed needs of its replica's connection."""

    label: str

    def send_async(self, method: str, args: tuple[Any, ...]) -> None: ...

    async def send_blob(self, oid: bytes, serial: bytes, path: str) -> None: ...

    async def drained(self) -> None: ...


class ReplicaSnapshot(TypedDict):
    label: str
    address: str
    state: str
    acknowledged: str
    #: Seconds of history the replica is behind (by the tids' times).
    lag_seconds: float
    #: Commits it has not acknowledged, as far as the primary counts them.
    lag_transactions: int


def tid_time(tid: bytes) -> float:
    return 0.0 if tid == z64 else TimeStamp(tid).timeTime()


@dataclass
class _Waiter:
    tid: bytes
    future: asyncio.Future[None]


class ReplicaLink:
    """One replica following this storage."""

    def __init__(
        self,
        replication: Replication,
        peer: ReplicaPeer,
        address: str,
        after: bytes,
    ) -> None:
        self._replication = replication
        self.peer = peer
        self.address = address
        #: The last transaction the replica has on disk.
        self.acknowledged = after
        #: The last transaction sent whole.
        self.sent = after
        #: Packs to forward once everything up to their tid was sent.
        self._packs: list[tuple[float, bytes]] = []
        self._wake = asyncio.Event()
        self.caught_up = False

    def wake(self) -> None:
        self._wake.set()

    def pack(self, t: float, last_tid: bytes) -> None:
        self._packs.append((t, last_tid))
        self._wake.set()

    def acknowledge(self, tid: bytes) -> None:
        if tid > self.acknowledged:
            self.acknowledged = min(tid, self.sent)
            self._replication.acknowledged()

    async def feed(self, tasks: ServerTasks) -> None:
        """Send every transaction after ``sent``, then each new one."""
        reader = TransactionReader(self._replication.hosted.storage, self.sent)
        try:
            await self._send(tasks, reader)
        finally:
            # In a thread: a read may still be under way there (the lock
            # makes the close wait for it).
            tasks.spawn(tasks.run_in_thread(reader.close))

    async def _send(self, tasks: ServerTasks, reader: TransactionReader) -> None:
        hosted = self._replication.hosted
        peer = self.peer
        packs_seen = hosted.packs
        current = self.sent  # the transaction whose records are being sent
        while True:
            if hosted.packs != packs_seen:
                packs_seen = hosted.packs
                reader.restart()
            self._send_packs()
            self._wake.clear()
            replication = self._replication
            items = await tasks.run_in_thread(reader.read, replication.committed_tid)
            if not items:
                if not self.caught_up:
                    self.caught_up = True
                    logger.info(
                        "%s: replica caught up with storage %r at %s",
                        peer.label,
                        hosted.name,
                        self.sent.hex(),
                    )
                    self._replication.changed()
                await self._wake.wait()
                continue
            for item in items:
                kind = item[0]
                if kind == "record":
                    _, oid, data, data_txn, blob_path = item
                    has_blob = blob_path is not None
                    if has_blob:
                        await peer.send_blob(oid, current, blob_path)
                    peer.send_async("replicate_record", (oid, data, data_txn, has_blob))
                elif kind == "begin":
                    current = item[1]
                    peer.send_async("replicate_begin", item[1:])
                else:
                    self.sent = item[1]
                    peer.send_async(
                        "replicate_end", (self.sent, replication.committed_tid)
                    )
            await peer.drained()

    def _send_packs(self) -> None:
        while self._packs and self._packs[0][1] <= self.sent:
            t, _ = self._packs.pop(0)
            self.peer.send_async("replicate_pack", (t,))

    def snapshot(self) -> ReplicaSnapshot:
        replication = self._replication
        last = replication.committed_tid
        return {
            "label": self.peer.label,
            "address": self.address,
            "state": "following" if self.caught_up else "catching up",
            "acknowledged": self.acknowledged.hex(),
            "lag_seconds": max(tid_time(last) - tid_time(self.acknowledged), 0.0),
            "lag_transactions": replication.commits_after(self.acknowledged),
        }


class Replication:
    """The replicas of one hosted storage, and the waits for them."""

    def __init__(self, hosted: HostedStorage) -> None:
        self.hosted = hosted
        settings = hosted.settings
        self.state = ReplicationState.of(hosted.storage)
        self.links: set[ReplicaLink] = set()
        #: ``tpc_finish`` replies waiting for replicas to confirm a tid.
        self._waiters: list[_Waiter] = []
        self._followers_changed = asyncio.Event()
        self.required = settings.sync_replicas
        self.timeout = settings.sync_replicas_timeout
        self.missing = settings.sync_replicas_missing
        #: Commits acknowledged to clients without the replicas required.
        self.unconfirmed_commits = 0
        self._degraded = False
        #: The tids of recent commits, to count a replica's lag.
        self._recent: list[bytes] = []
        #: The last transaction in the storage -- finished, if perhaps not
        #: yet published to clients (a sync commit waits for its replicas).
        self.committed_tid = hosted.last_tid

    @property
    def history(self) -> History:
        return self.state.history

    # -- replicas come and go ------------------------------------------

    def add(self, link: ReplicaLink) -> None:
        self.links.add(link)
        if link.address and link.address not in self.state.replicas:
            self.state = self.state.changed(
                replicas=(*self.state.replicas, link.address)
            )
        self.changed()

    def remove(self, link: ReplicaLink) -> None:
        self.links.discard(link)
        self.changed()

    def changed(self) -> None:
        self._followers_changed.set()
        self._followers_changed = asyncio.Event()

    def following(self) -> int:
        return sum(1 for link in self.links if link.caught_up)

    # -- the primary commits and packs ----------------------------------

    def committed(self, tid: bytes) -> None:
        """``tid`` is in the storage: send it to the replicas."""
        if tid <= self.committed_tid:
            return
        self.committed_tid = tid
        recent = self._recent
        recent.append(tid)
        if len(recent) > 2 * RECENT_COMMITS:
            del recent[:RECENT_COMMITS]
        for link in self.links:
            link.wake()

    def packed(self, t: float) -> None:
        for link in self.links:
            link.pack(t, self.committed_tid)

    def commits_after(self, tid: bytes) -> int:
        """Commits after ``tid`` among the recent ones counted."""
        count = 0
        for recent in reversed(self._recent):
            if recent <= tid:
                break
            count += 1
        return count

    # -- synchronous replication ----------------------------------------

    async def before_vote(self, label: str) -> None:
        """Refuse (or, in async mode, report) a commit that too few
        replicas are following to confirm."""
        if self.following() >= self.required or self.missing == ASYNC:
            return
        deadline = time.monotonic() + self.timeout
        while self.following() < self.required:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StorageError(
                    f"commit refused: sync-replicas is {self.required} but "
                    f"{self.following()} replica(s) of storage "
                    f"{self.hosted.name!r} are following"
                )
            changed = self._followers_changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    async def confirmed(self, tid: bytes) -> None:
        """Return once ``required`` replicas have ``tid`` on disk."""
        if self._confirmations(tid) >= self.required:
            return
        if self.missing == ASYNC and self.following() < self.required:
            self._report_degraded()
            return
        future = asyncio.get_running_loop().create_future()
        waiter = _Waiter(tid, future)
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            if self.missing == ASYNC:
                self._report_degraded()
                return
            raise StorageError(
                f"transaction {tid.hex()} is committed on the primary, but only "
                f"{self._confirmations(tid)} of the {self.required} replicas "
                f"required confirmed it within {self.timeout:g} s"
            ) from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def acknowledged(self) -> None:
        if self._degraded and self.following() >= self.required:
            self._degraded = False
            logger.warning(
                "storage %r: %d replica(s) following again; commits are "
                "confirmed by replicas again",
                self.hosted.name,
                self.following(),
            )
        for waiter in list(self._waiters):
            if self._confirmations(waiter.tid) >= self.required:
                self._waiters.remove(waiter)
                if not waiter.future.done():
                    waiter.future.set_result(None)

    def _confirmations(self, tid: bytes) -> int:
        return sum(1 for link in self.links if link.acknowledged >= tid)

    def _report_degraded(self) -> None:
        self.unconfirmed_commits += 1
        if not self._degraded:
            self._degraded = True
            logger.error(
                "storage %r: sync-replicas is %d but %d replica(s) are "
                "following: commits are acknowledged without them "
                "(sync-replicas-missing async)",
                self.hosted.name,
                self.required,
                self.following(),
            )

    def snapshot(self) -> list[ReplicaSnapshot]:
        return sorted(
            (link.snapshot() for link in self.links), key=lambda s: s["label"]
        )


#: Commits remembered to count lag in transactions.
RECENT_COMMITS = 100_000
