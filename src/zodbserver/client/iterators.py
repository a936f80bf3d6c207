"""Iteration over a remote storage's transactions and records.

The server keeps the iterator state and hands out integer ids
(``iterator_start`` / ``iterator_record_start``); each ``next`` is one
round trip.  Ids of iterators the application dropped are sent back with
``iterator_gc``.  After a disconnect every id is meaningless, so live
iterators raise ``ClientDisconnected``.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Protocol

import ZODB.BaseStorage

from .exceptions import ClientDisconnected


class IteratorRegistry:
    """The server-side iterator ids this client holds.

    Application threads add and forget ids; the connection thread clears
    them all on a disconnect.  ``_lock`` guards every attribute.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: weakref.WeakValueDictionary[int, Any] = (
            weakref.WeakValueDictionary()
        )
        self._ids: set[int] = set()
        self._generation = 0

    @property
    def generation(self) -> int:
        with self._lock:
            return self._generation

    def add(self, iid: int, iterator: Any) -> None:
        with self._lock:
            self._live[iid] = iterator
            self._ids.add(iid)

    def forget(self, iid: int) -> None:
        with self._lock:
            self._live.pop(iid, None)
            self._ids.discard(iid)

    def collectable(self) -> list[int]:
        """Ids whose iterators the application no longer references."""
        with self._lock:
            dead = self._ids - set(self._live.keys())
            self._ids -= dead
        return sorted(dead)

    def release_all(self) -> list[int]:
        """Every id, forgotten: the storage is closing."""
        with self._lock:
            ids = sorted(self._ids)
            self._live.clear()
            self._ids.clear()
        return ids

    def disconnected(self) -> None:
        with self._lock:
            self._live.clear()
            self._ids.clear()
            self._generation += 1


class IteratorHost(Protocol):
    """What the iterators need of the storage that made them."""

    _iterators: IteratorRegistry

    def _call(self, method: str, *args: Any, timeout: float | None = None) -> Any: ...

    def _release_iterators(self, iids: list[int]) -> None: ...


class TransactionIterator:
    def __init__(self, storage: IteratorHost, iid: int, generation: int) -> None:
        self._storage = storage
        self._iid = iid
        self._generation = generation
        self._ended = False

    def __iter__(self) -> TransactionIterator:
        return self

    def _check(self) -> None:
        if self._generation != self._storage._iterators.generation:
            raise ClientDisconnected("iterator lost with the connection")

    def __next__(self) -> TransactionRecord:
        if self._ended:
            raise StopIteration
        self._check()
        item = self._storage._call("iterator_next", self._iid)
        if item is None:
            self._ended = True
            self._storage._iterators.forget(self._iid)
            raise StopIteration
        tid, status, user, description, extension = item
        return TransactionRecord(self, tid, status, user, description, dict(extension))

    def close(self) -> None:
        """Release the server's iterator now rather than at the next gc."""
        if not self._ended:
            self._ended = True
            self._storage._iterators.forget(self._iid)
            if self._generation == self._storage._iterators.generation:
                self._storage._release_iterators([self._iid])


class TransactionRecord(ZODB.BaseStorage.TransactionRecord):
    def __init__(
        self,
        iterator: TransactionIterator,
        tid: bytes,
        status: str,
        user: bytes,
        description: bytes,
        extension: dict[str, Any],
    ) -> None:
        super().__init__(tid, status, user, description, extension)
        self._iterator = iterator

    def __iter__(self) -> RecordIterator:
        iterator = self._iterator
        iterator._check()
        storage = iterator._storage
        riid = storage._call("iterator_record_start", iterator._iid, self.tid)
        records = RecordIterator(storage, riid)
        storage._iterators.add(riid, records)
        return records


class RecordIterator:
    def __init__(self, storage: IteratorHost, riid: int) -> None:
        self._storage = storage
        self._riid = riid
        self._generation = storage._iterators.generation
        self._ended = False

    def __iter__(self) -> RecordIterator:
        return self

    def __next__(self) -> ZODB.BaseStorage.DataRecord:
        if self._ended:
            raise StopIteration
        if self._generation != self._storage._iterators.generation:
            raise ClientDisconnected("iterator lost with the connection")
        item = self._storage._call("iterator_record_next", self._riid)
        if item is None:
            self._ended = True
            self._storage._iterators.forget(self._riid)
            raise StopIteration
        oid, tid, data, data_txn = item
        return ZODB.BaseStorage.DataRecord(oid, tid, data, data_txn)
