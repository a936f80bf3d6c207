"""One connection's file writes, run in order in worker threads.

The event loop must not wait for the disk (docs/architecture.md, The
commit path), and a blob upload is written as its chunks arrive.  A
``FileWriter`` takes that work off the loop: the loop submits jobs (open a
file, write a chunk, close it, remove it), each with the bytes it holds,
and the writer runs them in the server's worker threads, in the order they
were submitted, a batch of all that is queued per trip to a thread.

Memory stays bounded: past ``limit`` bytes queued, ``submit`` calls
``over_limit`` with a future that is done once the writes have caught up
(queued bytes back at or below ``limit``).  A session hands that future to
its transport, which reads no more of the client's calls until it is done,
as it does when the client does not read its replies; the follower awaits
it.

Who owns what
-------------

The event loop owns the writer: its queue, its count of queued bytes and
its one task (spawned as work of the server's ``ServerTasks``, so that
shutdown waits for the removals it still has to do).  The jobs of one
writer run one batch at a time, so whatever they touch -- an upload's open
file -- is used by one thread at a time.  Before another thread reads such
a file (the vote, in the storage's thread), the loop waits for ``idle``.
A job that fails is reported to the loop, to the ``failed`` callback given
with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .tasks import ServerTasks

logger = logging.getLogger(__name__)

#: Bytes a connection may have received for its files and not yet written.
BYTES_IN_FLIGHT: Final = 4 * 1024 * 1024

#: What is told of a job's failure, on the loop.
Failed = Callable[[Exception], None]


@dataclass(frozen=True)
class _Job:
    run: Callable[[], object]
    size: int
    failed: Failed | None


def _run_jobs(jobs: list[_Job]) -> list[tuple[_Job, Exception]]:
    """Run ``jobs`` in order (in a worker thread); the ones that failed."""
    failures: list[tuple[_Job, Exception]] = []
    for job in jobs:
        try:
            job.run()
        except Exception as error:
            failures.append((job, error))
    return failures


class FileWriter:
    """Jobs run in submission order in worker threads, with bounded bytes."""

    def __init__(
        self,
        tasks: ServerTasks,
        limit: int = BYTES_IN_FLIGHT,
        over_limit: Callable[[asyncio.Future[None]], object] | None = None,
    ) -> None:
        self._tasks = tasks
        self.limit = limit
        self._over_limit = over_limit
        self._jobs: deque[_Job] = deque()
        #: Bytes submitted and not yet written.
        self.queued_bytes = 0
        self._task: asyncio.Task[None] | None = None
        self._room: asyncio.Future[None] | None = None
        self._idle: list[asyncio.Future[None]] = []

    def __repr__(self) -> str:
        return f"<FileWriter {len(self._jobs)} jobs, {self.queued_bytes} bytes queued>"

    def submit(
        self, run: Callable[[], object], size: int = 0, failed: Failed | None = None
    ) -> None:
        """Run ``run()`` after every job submitted before it; it holds
        ``size`` bytes until then."""
        self._jobs.append(_Job(run, size, failed))
        self.queued_bytes += size
        if self._task is None:
            self._task = self._tasks.spawn(self._run_queued())
        if self.queued_bytes > self.limit and self._room is None:
            self._room = asyncio.get_running_loop().create_future()
            if self._over_limit is not None:
                self._over_limit(self._room)

    def room(self) -> asyncio.Future[None]:
        """Done once at most ``limit`` bytes are queued."""
        if self._room is not None:
            return self._room
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def idle(self) -> None:
        """Wait until every job submitted so far has run."""
        if self._task is None:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle.append(waiter)
        await waiter

    async def _run_queued(self) -> None:
        try:
            while self._jobs:
                batch = list(self._jobs)
                self._jobs.clear()
                failures = await self._tasks.run_in_thread(_run_jobs, batch)
                self.queued_bytes -= sum(job.size for job in batch)
                for job, error in failures:
                    self._report(job, error)
                if self.queued_bytes <= self.limit:
                    self._make_room()
        finally:
            self._task = None
            self._make_room()
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _make_room(self) -> None:
        room, self._room = self._room, None
        if room is not None and not room.done():
            room.set_result(None)

    @staticmethod
    def _report(job: _Job, error: Exception) -> None:
        if job.failed is None:
            logger.warning("a file write failed: %r", error)
            return
        try:
            job.failed(error)
        except Exception:
            logger.exception("reporting a failed file write failed")
