"""The recent-commits queue that answers ``getInvalidations``.

A client that reconnects with a persistent cache last valid at tid ``T``
asks which objects changed after ``T``.  We keep the oids of the last N
commits, newest last.  The queue can vouch for ``T`` only when its oldest
entry is at or before ``T``: then every later commit is in it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

Oid = bytes
Tid = bytes


class InvalidationQueue:
    """The (tid, oids) of the most recent commits of one storage."""

    def __init__(self, size: int, last_tid: Tid) -> None:
        self.size = max(size, 1)
        # The seed entry carries no oids: it only records that nothing
        # before ``last_tid`` is needed to vouch for clients at it.
        self._entries: deque[tuple[Tid, tuple[Oid, ...]]] = deque(
            [(last_tid, ())], maxlen=self.size
        )

    @classmethod
    def from_storage(
        cls, size: int, storage: object, last_tid: Tid
    ) -> InvalidationQueue:
        """Seed the queue from ``storage.lastInvalidations`` where it exists."""
        queue = cls(size, last_tid)
        recent = getattr(storage, "lastInvalidations", None)
        if recent is not None:
            entries = [(tid, tuple(oids)) for tid, oids in recent(queue.size)]
            if entries:
                queue._entries = deque(entries, maxlen=queue.size)
        return queue

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, tid: Tid, oids: Iterable[Oid]) -> None:
        self._entries.append((tid, tuple(oids)))

    @property
    def latest_tid(self) -> Tid:
        return self._entries[-1][0]

    def since(self, tid: Tid) -> tuple[Tid, list[Oid]] | None:
        """``(latest_tid, oids changed after tid)``, or None if unknown."""
        entries = self._entries
        if entries[0][0] > tid:
            return None
        changed: set[Oid] = set()
        for entry_tid, oids in reversed(entries):
            if entry_tid <= tid:
                break
            changed.update(oids)
        return entries[-1][0], list(changed)
