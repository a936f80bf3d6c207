"""The client cache: object revisions kept near the application.

A record is one revision of one object: ``(oid, start, end, data)`` where
``start`` is the tid that wrote it and ``end`` the tid that replaced it, or
``None`` while the revision is *current*.  Each oid has at most one current
record and any number of non-current ones; ``load_before`` answers from
either, exactly as the server's ``loadBefore`` would.

Correctness rests on one rule: a current record is only ever made non-current
or dropped, by ``invalidate``, when a commit replaces it.  The connection
applies invalidations in the order the server sends them, and the server
sends every reply computed before a commit ahead of that commit's
invalidation, so a record stored as current really was current when stored.

Eviction is least-recently-used over all records, bounded by the total size
of the data plus a fixed per-record overhead.  Reading, storing and evicting
are pure in-memory bookkeeping under one lock; the optional persistence
(``cache_file``) only snapshots ``records()`` and gives them back to
``restore()``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ZODB.utils import z64

#: Bytes charged per record on top of its data, so tiny records still count.
RECORD_OVERHEAD = 64

_Key = tuple[bytes, bytes]  # (oid, start)


@dataclass(slots=True)
class CacheRecord:
    oid: bytes
    start: bytes
    end: bytes | None
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data) + RECORD_OVERHEAD


class ClientCache:
    """Revisions by oid, with a size limit and least-recently-used eviction.

    Thread-safe: application threads read while the connection thread stores
    and invalidates.
    """

    def __init__(self, size: int = 20 * 1024 * 1024) -> None:
        self.maxsize = size
        self.lock = threading.RLock()
        self._records: OrderedDict[_Key, CacheRecord] = OrderedDict()
        self._current: dict[bytes, bytes] = {}  # oid -> start of the current record
        self._noncurrent: dict[bytes, set[bytes]] = {}  # oid -> starts
        self._bytes = 0
        self._last_tid = z64
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    # -- queries ---------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    @property
    def total_size(self) -> int:
        return self._bytes

    def get_last_tid(self) -> bytes:
        """The tid up to which the cache is known to be up to date."""
        return self._last_tid

    def load(self, oid: bytes) -> tuple[bytes, bytes] | None:
        """The current ``(data, tid)`` of ``oid``, or ``None``."""
        with self.lock:
            start = self._current.get(oid)
            if start is None:
                self.misses += 1
                return None
            record = self._touch((oid, start))
            self.hits += 1
            return record.data, record.start

    def load_before(
        self, oid: bytes, before: bytes
    ) -> tuple[bytes, bytes, bytes | None] | None:
        """The revision of ``oid`` current just before tid ``before``."""
        with self.lock:
            start = self._current.get(oid)
            if start is not None and start < before:
                record = self._touch((oid, start))
                self.hits += 1
                return record.data, record.start, None
            for start in self._noncurrent.get(oid, ()):
                record = self._records[(oid, start)]
                assert record.end is not None
                if start < before <= record.end:
                    self._touch((oid, start))
                    self.hits += 1
                    return record.data, record.start, record.end
            self.misses += 1
            return None

    def records(self) -> Iterator[CacheRecord]:
        """All records, least recently used first (a snapshot)."""
        with self.lock:
            return iter(list(self._records.values()))

    # -- updates ---------------------------------------------------------

    def store(self, oid: bytes, start: bytes, end: bytes | None, data: bytes) -> None:
        """Remember a revision; ``end=None`` marks it current."""
        record = CacheRecord(oid, start, end, data)
        if record.size > self.maxsize:
            return
        with self.lock:
            if (oid, start) in self._records:
                existing = self._records[(oid, start)]
                if end is not None and existing.end is None:
                    # We learnt it was replaced; invalidate() should have said.
                    self._close_current(oid, end)
                return
            if end is None:
                current = self._current.get(oid)
                if current is not None:
                    if current > start:
                        return  # we already hold a later revision
                    self._close_current(oid, start)
                self._current[oid] = start
            else:
                self._noncurrent.setdefault(oid, set()).add(start)
            self._records[(oid, start)] = record
            self._bytes += record.size
            self._evict()

    def invalidate(self, oid: bytes, tid: bytes | None) -> None:
        """``tid`` replaced the current revision of ``oid``; ``None`` forgets it."""
        with self.lock:
            start = self._current.get(oid)
            if start is None:
                return
            if tid is None:
                del self._current[oid]
                self._remove((oid, start))
            elif tid > start:
                self._close_current(oid, tid)
            # tid == start: the record already holds what tid wrote.

    def invalidate_all(self, oids: Iterable[bytes], tid: bytes | None) -> None:
        """``invalidate`` each of ``oids``, under one hold of the lock."""
        with self.lock:
            current = self._current
            for oid in oids:
                start = current.get(oid)
                if start is None:
                    continue
                if tid is None:
                    del current[oid]
                    self._remove((oid, start))
                elif tid > start:
                    self._close_current(oid, tid)

    def set_last_tid(self, tid: bytes) -> None:
        """Record that the cache reflects every commit up to ``tid``."""
        with self.lock:
            if not tid:
                return
            if tid < self._last_tid and self._records:
                raise ValueError(
                    f"new last tid {tid.hex()} is before {self._last_tid.hex()}"
                )
            self._last_tid = tid

    def restore(self, last_tid: bytes, records: Iterable[CacheRecord]) -> None:
        """Replace the contents with saved records (least recently used first).

        The same as storing each record in turn.  A saved cache holds one
        record per object, current, as a rule: those are taken as they are;
        any other goes through ``store``.
        """
        with self.lock:
            self.clear()
            self._last_tid = z64
            entries = self._records
            current = self._current
            for record in records:
                oid = record.oid
                key = (oid, record.start)
                if record.end is None and oid not in current and key not in entries:
                    size = len(record.data) + RECORD_OVERHEAD
                    if size <= self.maxsize:
                        current[oid] = record.start
                        entries[key] = record
                        self._bytes += size
                        if self._bytes > self.maxsize:
                            self._evict()
                else:
                    self.store(oid, record.start, record.end, record.data)
            self._last_tid = last_tid

    def clear(self) -> None:
        """Drop every record.  The last tid stays: it is what the client has
        seen of the database, not something the records hold (zodbshootout
        and other tools clear ZEO's cache this way between cold reads)."""
        with self.lock:
            self._records.clear()
            self._current.clear()
            self._noncurrent.clear()
            self._bytes = 0

    def close(self) -> None:
        """Release resources (nothing to release for memory)."""

    # -- bookkeeping -----------------------------------------------------

    def _touch(self, key: _Key) -> CacheRecord:
        self._records.move_to_end(key)
        return self._records[key]

    def _close_current(self, oid: bytes, end: bytes) -> None:
        start = self._current.pop(oid)
        self._records[(oid, start)].end = end
        self._noncurrent.setdefault(oid, set()).add(start)

    def _remove(self, key: _Key) -> None:
        record = self._records.pop(key)
        self._bytes -= record.size
        oid, start = key
        if record.end is None:
            if self._current.get(oid) == start:
                del self._current[oid]
        else:
            starts = self._noncurrent.get(oid)
            if starts is not None:
                starts.discard(start)
                if not starts:
                    del self._noncurrent[oid]

    def _evict(self) -> None:
        while self._bytes > self.maxsize and self._records:
            key = next(iter(self._records))
            self._remove(key)
            self.evictions += 1
