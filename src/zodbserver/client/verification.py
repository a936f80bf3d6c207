"""Cache verification: is what the client cached still what the server has?

On every connect, before any application call proceeds, the cache is
checked against the tid the server reported as its last
(docs/protocol.md, Cache verification).  Runs on the connection thread.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any, Protocol

from ZODB.utils import z64

from .cache import ClientCache
from .cache_file import SavedCache

logger = logging.getLogger(__name__)


class Invalidations(Protocol):
    """Where verification reports what the database must forget."""

    def invalidate_transaction(self, tid: bytes, oids: list[bytes]) -> None: ...

    def invalidate_cache(self) -> None: ...


class Server(Protocol):
    """The one call verification makes (a ``ServerLink``)."""

    def call(self, method: str, args: tuple[Any, ...]) -> Awaitable[Any]: ...


async def verify_cache(
    server: Server,
    cache: ClientCache,
    server_tid: bytes,
    database: Invalidations,
    saved: SavedCache | None = None,
) -> str:
    """Bring ``cache`` in line with a server whose last tid is ``server_tid``;
    what was done, as ZEO's ``verify_result`` names it.

    ``saved``, a snapshot from the cache file still pending, stands for the
    cache's contents: its records are read in only when they are kept.
    """
    if saved is not None and saved.pending and not len(cache):
        cache_tid = saved.last_tid
    else:
        if saved is not None:
            saved.discard()  # what the cache holds now is newer
            saved = None
        if not len(cache):
            return "empty cache"
        cache_tid = cache.get_last_tid()
    if cache_tid == z64:
        logger.error("non-empty cache without a tid, clearing it")
        _drop(cache, database, saved)
        return "non-empty cache without tid"
    if cache_tid > server_tid:
        # The server lost transactions the client saw (a crash between vote
        # and finish on a server that reports the unfinished tid, a restored
        # backup, another Data.fs).  Refusing it would stall every
        # application thread; the cache cannot be trusted either.
        logger.warning(
            "the client cache (tid %s) is newer than the server (tid %s); "
            "dropping the cache: the server lost transactions this client "
            "saw, or serves an older copy of the database",
            cache_tid.hex(),
            server_tid.hex(),
        )
        _drop(cache, database, saved)
        return "cache newer than server, clearing"
    if cache_tid == server_tid:
        return "cache up to date" if _restored(saved, cache) else "empty cache"
    changes = await server.call("getInvalidations", (cache_tid,))
    if changes:
        tid, oids = changes
        if not _restored(saved, cache):
            return "empty cache"
        cache.invalidate_all(oids, None)
        database.invalidate_transaction(tid, list(oids))
        return "quick verification"
    logger.warning("the client cache is too old to verify, dropping it")
    _drop(cache, database, saved)
    return "cache too old, clearing"


def _restored(saved: SavedCache | None, cache: ClientCache) -> bool:
    """Read the saved records in, if any; ``False`` when the file turned out
    damaged (the cache is then empty)."""
    return saved is None or saved.restore_into(cache)


def _drop(
    cache: ClientCache, database: Invalidations, saved: SavedCache | None = None
) -> None:
    if saved is not None:
        saved.discard()
    cache.clear()
    database.invalidate_cache()
