"""Where each commit's time went, for the monitor and the slow-commit log.

A transaction's ``CommitClock`` marks its steps as they happen: vote
requested, commit lock granted, storage voted, lock released (when the
finish is handed to the storage thread), finished.  When the commit is
done, ``CommitTimes`` -- one per hosted storage, owned by the event loop --
adds its durations to four histograms (waiting for the lock, holding it,
vote, finish), keeps it among the recent commits the status page lists,
and logs it once if it held the lock longer than the slow-commit threshold.
Aborted transactions are not counted: a histogram's count is the number
of commits.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import deque
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

#: Histogram bucket bounds, in seconds: from a cached fsync to a stalled disk.
BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

#: Commits kept for the status page's "slowest recent commits".
RECENT_COMMITS = 200


class Histogram:
    """Observations counted in fixed buckets, as Prometheus histograms are."""

    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        #: Per bucket (not cumulative); the last one is above every bound.
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations at or below it)``, +Inf last."""
        total = 0
        buckets = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            buckets.append((bound, total))
        return buckets


@dataclass
class CommitClock:
    """Monotonic marks of one transaction's commit steps (None: not yet)."""

    vote_requested: float | None = None
    locked: float | None = None
    voted: float | None = None
    unlocked: float | None = None

    @staticmethod
    def now() -> float:
        return time.monotonic()


@dataclass(frozen=True)
class CommitRecord:
    """One finished commit, as the status page and the slow log show it."""

    #: Wall-clock time the commit finished (seconds since the epoch).
    finished_at: float
    client: str
    tid: str
    objects: int
    bytes: int
    wait: float
    vote: float
    finish: float
    hold: float


@dataclass
class CommitTimes:
    """The commit timings of one storage."""

    wait: Histogram = field(default_factory=Histogram)
    hold: Histogram = field(default_factory=Histogram)
    vote: Histogram = field(default_factory=Histogram)
    finish: Histogram = field(default_factory=Histogram)
    recent: deque[CommitRecord] = field(
        default_factory=lambda: deque(maxlen=RECENT_COMMITS)
    )

    def record(
        self,
        clock: CommitClock,
        *,
        client: str,
        tid: bytes,
        objects: int,
        size: int,
        slow_threshold: float,
    ) -> CommitRecord:
        """Count a finished commit; log it if it held the lock too long."""
        finished = clock.now()
        requested = clock.vote_requested
        locked = clock.locked
        voted = clock.voted
        unlocked = clock.unlocked
        assert requested is not None
        assert locked is not None
        assert voted is not None
        assert unlocked is not None
        entry = CommitRecord(
            finished_at=time.time(),
            client=client,
            tid=tid.hex(),
            objects=objects,
            bytes=size,
            wait=locked - requested,
            vote=voted - locked,
            finish=finished - unlocked,
            hold=unlocked - locked,
        )
        self.wait.observe(entry.wait)
        self.hold.observe(entry.hold)
        self.vote.observe(entry.vote)
        self.finish.observe(entry.finish)
        self.recent.append(entry)
        if entry.hold > slow_threshold:
            logger.warning(
                "slow commit by %s: held the commit lock %.3f s "
                "(%d objects, %d bytes; waited %.3f s for the lock, "
                "vote %.3f s, finish %.3f s, the rest waiting for the client)",
                client,
                entry.hold,
                objects,
                size,
                entry.wait,
                entry.vote,
                entry.finish,
            )
        return entry

    def slowest(self, count: int = 10) -> list[CommitRecord]:
        return sorted(self.recent, key=lambda entry: entry.hold, reverse=True)[:count]
