"""Reading a storage's transactions for a replica, a bounded piece at a time.

A primary streams its storage to a replica from the replica's last
transaction on, whatever the size of the database: ``TransactionReader``
keeps one storage iterator open across calls and hands out *items* --
a transaction's header, its records one by one, its end -- until a byte
budget is spent, then stops, mid-transaction if need be, and goes on from
there at the next call.  Memory is the budget plus one record.

Items are plain tuples, as they go on the wire:

* ``("begin", tid, status, user, description, extension_bytes)``
* ``("record", oid, data, data_txn, blob_path)`` -- ``blob_path`` is the
  file of the record's blob revision (None: not a blob, or its file is
  gone); the transport streams the file before the record.
* ``("end", tid)``

Calls run in a worker thread; a lock keeps them one at a time (``close``
may come from another thread while a read is under way).  A pack ends the
iterator (a FileStorage iterator cannot go on over a file that pack
replaced): the caller says so with ``restart`` and reading resumes after
the last transaction handed out whole.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from typing import Any

from ZODB.blob import is_blob_record
from ZODB.POSException import POSKeyError
from ZODB.utils import p64, u64

from .storage_api import ServedStorage

Item = tuple[Any, ...]

#: Bytes of record data a call hands out (at least one item).
DEFAULT_BUDGET = 4 * 1024 * 1024


class TransactionReader:
    def __init__(self, storage: ServedStorage, after: bytes) -> None:
        self._storage = storage
        #: The last transaction handed out whole.
        self.position = after
        self._items: Generator[Item, None, None] | None = None
        self._until = after
        self._in_transaction = False
        self._lock = threading.Lock()

    def restart(self) -> None:
        """Forget the open iterator (after a pack): read on from
        ``position``."""
        with self._lock:
            self._drop()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        items, self._items = self._items, None
        if items is not None:
            items.close()
        self._in_transaction = False

    def read(self, until: bytes, budget: int = DEFAULT_BUDGET) -> list[Item]:
        """Items of the transactions after ``position`` up to ``until``."""
        with self._lock:
            if self._items is None or until != self._until:
                if self._items is not None and self._in_transaction:
                    # Finish the transaction under way before widening the
                    # range.
                    return self._take(budget)
                self._drop()
                self._until = until
                if until <= self.position:
                    return []
                self._items = self._generate(until)
            return self._take(budget)

    def _take(self, budget: int) -> list[Item]:
        items: list[Item] = []
        spent = 0
        assert self._items is not None
        for item in self._items:
            items.append(item)
            if item[0] == "record" and item[2] is not None:
                spent += len(item[2])
            if spent >= budget:
                break
        return items

    def _generate(self, until: bytes) -> Generator[Item, None, None]:
        storage = self._storage
        start = p64(u64(self.position) + 1)
        load_blob = getattr(storage, "loadBlob", None)
        transactions = storage.iterator(start, until)
        try:
            yield from self._items_of(transactions, load_blob)
        finally:
            close = getattr(transactions, "close", None)
            if close is not None:
                close()

    def _items_of(
        self, transactions: Any, load_blob: Any
    ) -> Generator[Item, None, None]:
        for transaction in transactions:
            tid = transaction.tid
            self._in_transaction = True
            yield (
                "begin",
                tid,
                transaction.status,
                transaction.user,
                transaction.description,
                transaction.extension_bytes,
            )
            for record in transaction:
                blob_path = None
                if load_blob is not None and is_blob_record(record.data):
                    try:
                        blob_path = load_blob(record.oid, record.tid)
                    except POSKeyError:
                        blob_path = None
                yield ("record", record.oid, record.data, record.data_txn, blob_path)
            self._in_transaction = False
            self.position = tid
            yield ("end", tid)
