"""Readahead: guess which objects an application will load next.

ZODB loads objects one at a time, as the application touches them, so a
client that walks a container with an empty cache waits one round trip per
object.  Files systems solved the same problem long ago: when reads turn
out to be sequential, read ahead.  Here "sequential" means *siblings*: the
objects one record refers to, in the order its pickle names them (a
container's values, a BTree node's children).

The rule is deliberately cautious, because a prefetched object nobody reads
costs the server a load and the cache some room:

* every record loaded from the server that refers to at least
  ``MIN_REFERENCES`` objects is remembered as a *parent*, with its
  references in pickle order (at most ``MAX_REFERENCES`` of them);
* the first cache miss on one of a parent's children prefetches nothing (a
  single lookup in a BTree, or one item of a big folder, stays one load);
* every later miss on a child of the same parent prefetches the next
  ``window`` siblings after that child, and the window doubles each time, up
  to the configured maximum: a scan of N children costs about
  ``log2(N / FIRST_WINDOW)`` round trips instead of N;
* the first sibling of each window prefetched is *marked*: when the
  application reaches it -- usually a cache hit, since it was prefetched --
  the next window is requested as if it had missed, while the application
  still has the rest of this window to read.  A scan under way then rarely
  waits at all (the asynchronous readahead of file systems).

Only the bookkeeping lives here; the connection manager decides which of the
proposed oids are worth loading (not cached, not already in flight) and
loads them as ordinary ``loadBefore`` calls, so prefetched records obey the
same ordering rules as any other load.  Not thread-safe: the connection
thread alone uses it; application threads read only ``marked``, an
immutable value it replaces (the thread rule: ``state.py``).
"""

from __future__ import annotations

import pickle
from collections import OrderedDict

from ZODB.serialize import referencesf

#: Records referring to fewer objects are not worth remembering.
MIN_REFERENCES = 4
#: References remembered per parent (the rest are never read ahead).
MAX_REFERENCES = 4096
#: Parents remembered at once, least recently used forgotten first.
MAX_PARENTS = 32
#: Siblings prefetched on the second miss; doubled on each later one.
FIRST_WINDOW = 16
#: Marked oids remembered at once, the oldest forgotten first.
MAX_MARKS = MAX_PARENTS
#: The opcode before every persistent reference in a ZODB record (ZODB
#: pickles with protocol 1 or later); a record with fewer of these bytes
#: than ``MIN_REFERENCES`` cannot be a parent.
BINPERSID = pickle.BINPERSID


class _Parent:
    __slots__ = ("misses", "references", "requested", "window")

    def __init__(self, references: list[bytes], window: int) -> None:
        self.references = references
        self.misses = 0
        self.window = window
        #: Index of the first reference not yet proposed for prefetching.
        self.requested = 0


class Readahead:
    """Sibling readahead over the records a client loads."""

    def __init__(self, max_window: int) -> None:
        self.max_window = max_window
        self._parents: OrderedDict[bytes, _Parent] = OrderedDict()
        self._parent_of: dict[bytes, tuple[bytes, int]] = {}
        #: The first sibling of each window proposed: reaching it proposes
        #: the next window (an insertion-ordered set).
        self.marks: dict[bytes, None] = {}
        #: ``marks`` as an immutable value, replaced whenever they change:
        #: what application threads test a cache hit against.
        self.marked: frozenset[bytes] = frozenset()

    @property
    def enabled(self) -> bool:
        return self.max_window > 0

    def loaded(self, oid: bytes, data: bytes) -> None:
        """A record of ``oid`` came from the server: remember its children."""
        if not self.enabled:
            return
        if oid in self._parents:  # a newer revision: its children may differ
            self._forget(oid)
        if data.count(BINPERSID) < MIN_REFERENCES:
            return  # cannot hold enough references: skip parsing it
        try:
            references = referencesf(data)
        except Exception:  # not a ZODB record we can read: no readahead
            return
        if len(references) < MIN_REFERENCES:
            return
        references = list(dict.fromkeys(references))[:MAX_REFERENCES]
        self._parents[oid] = _Parent(references, min(FIRST_WINDOW, self.max_window))
        for index, child in enumerate(references):
            self._parent_of[child] = (oid, index)
        while len(self._parents) > MAX_PARENTS:
            self._forget(next(iter(self._parents)))

    def missed(self, oid: bytes) -> list[bytes]:
        """The application missed ``oid`` in the cache: oids to prefetch."""
        changed = oid in self.marks
        if changed:
            del self.marks[oid]
        proposed = self._propose(oid)
        if proposed:
            changed = True
            self.marks[proposed[0]] = None
            while len(self.marks) > MAX_MARKS:
                del self.marks[next(iter(self.marks))]
        if changed:
            self.marked = frozenset(self.marks)
        return proposed

    def reached(self, oid: bytes) -> list[bytes]:
        """The application read ``oid`` from the cache: oids to prefetch
        if it is marked, as if it had missed."""
        if oid not in self.marks:
            return []
        return self.missed(oid)

    def _propose(self, oid: bytes) -> list[bytes]:
        found = self._parent_of.get(oid)
        if found is None:
            return []
        parent_oid, index = found
        parent = self._parents[parent_oid]
        self._parents.move_to_end(parent_oid)
        parent.misses += 1
        if parent.misses < 2:
            return []
        start = max(index + 1, parent.requested)
        end = min(len(parent.references), index + 1 + parent.window)
        parent.window = min(parent.window * 2, self.max_window)
        if start >= end:
            return []
        parent.requested = end
        return parent.references[start:end]

    def _forget(self, parent_oid: bytes) -> None:
        parent = self._parents.pop(parent_oid)
        for child in parent.references:
            if self._parent_of.get(child, (None,))[0] == parent_oid:
                del self._parent_of[child]
