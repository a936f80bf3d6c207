"""One-call shortcuts: a storage, a database or a connection to a server.

The shapes of ZEO's ``ZEO.client``, ``ZEO.DB`` and ``ZEO.connection``::

    db = zodbserver.DB(("db.example", 8100), cache_size=200 * MB)
    with zodbserver.connection(8100) as conn:   # a port means 127.0.0.1
        conn.root()["counter"] = 1

``address`` and the keyword arguments are ``ClientStorage``'s.  Whatever a
shortcut opened is closed again if a later step fails.
"""

from __future__ import annotations

from typing import Any

import ZODB

from .storage import ClientStorage

__all__ = ["DB", "client", "connection"]


def client(address: Any, **options: Any) -> ClientStorage:
    """A ``ClientStorage`` for ``address``: ``ClientStorage(address, **options)``."""
    return ClientStorage(address, **options)


def DB(address: Any, **options: Any) -> ZODB.DB:
    """A ``ZODB.DB`` over a new ``ClientStorage``; closing it closes the storage."""
    storage = client(address, **options)
    try:
        return ZODB.DB(storage)
    except BaseException:
        storage.close()
        raise


def connection(address: Any, **options: Any) -> Any:
    """A connection to a new ``DB``; closing the connection closes the DB."""
    db = DB(address, **options)
    try:
        return db.open_then_close_db_when_connection_closes()
    except BaseException:
        db.close()
        raise
