"""Routing the storage's requests to the active link.

Everything an application thread asks of the server crosses to the
connection thread (``connection.ClientThread``) and lands here: loads (with
readahead), calls that wait for a connection, the async calls of a
transaction, blob uploads and the finish of a commit.  A request tagged with
a connection generation reaches that connection or fails with
``ClientDisconnected``; nothing meant for a lost connection goes to its
successor.  ``RequestRouting`` is a part of ``ConnectionManager``
(``manager.py``), which owns the state it reads; it runs on the connection
thread only (the thread rule: ``state.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, BinaryIO

from ZODB import POSException

from ..chunks import Chunk, at_end, next_chunks
from .cache import ClientCache
from .exceptions import ClientDisconnected
from .link import QueuedCall, ServerLink
from .readahead import Readahead
from .state import ConnectionState

logger = logging.getLogger(__name__)

#: One buffered store of a transaction: (oid, data or None, server_resolved).
Update = tuple[bytes, bytes | None, bool]
#: What ``loadBefore`` answers: ``(data, start, end)``, or None.
LoadResult = tuple[bytes, bytes, bytes | None] | None


class RequestRouting:
    """The storage's requests, on the connection thread."""

    # Owned by ConnectionManager:
    active: ServerLink | None
    state: ConnectionState
    closed: bool
    last_failure: str | None
    cache: ClientCache
    readahead: Readahead
    _connected: asyncio.Event

    async def operational_link(self, patience: float) -> ServerLink:
        """The active link, waiting up to ``patience`` seconds for one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while True:
            if self.closed:
                raise ClientDisconnected("the client storage is closed")
            if self.state.operational and self.active is not None:
                return self.active
            remaining = deadline - loop.time()
            if remaining <= 0:
                reason = f" ({self.last_failure})" if self.last_failure else ""
                raise ClientDisconnected(f"timed out waiting for a connection{reason}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._connected.wait()

    async def call(self, method: str, args: tuple[Any, ...], patience: float) -> Any:
        link = await self.operational_link(patience)
        return await link.call(method, args)

    def _link_of(self, generation: int) -> ServerLink:
        link = self.active
        if (
            generation != self.state.generation
            or link is None
            or not self.state.operational
        ):
            raise ClientDisconnected("the connection of this transaction was lost")
        return link

    def call_in_generation(
        self,
        method: str,
        args: tuple[Any, ...],
        generation: int,
        *,
        preceding: Sequence[QueuedCall] = (),
        on_error: Callable[[BaseException], object] | None = None,
    ) -> asyncio.Future[Any]:
        """A call that must reach the connection of ``generation``, or fail.

        ``preceding`` async calls are sent first, in the same write.
        """
        link = self._link_of(generation)
        with link.corked():
            if preceding:
                link.call_async_many(preceding, on_error)
            return link.call(method, args)

    def send_calls(
        self,
        calls: Sequence[QueuedCall],
        generation: int,
        on_error: Callable[[BaseException], object] | None = None,
    ) -> None:
        """Send async calls unless the connection they were meant for is gone."""
        try:
            link = self._link_of(generation)
        except ClientDisconnected:
            logger.debug("dropping %d calls for a lost connection", len(calls))
            return
        link.call_async_many(calls, on_error)

    async def send_blob(
        self,
        stream: BinaryIO,
        chunks: list[Chunk],
        store_args: tuple[Any, ...],
        generation: int,
    ) -> None:
        """Upload a blob file as storeBlobStart/Chunk/End, with backpressure.

        ``chunks`` are the file's first ``read_chunks``, read by the caller
        (the application thread, which waits for the upload anyway); the
        rest of a big file is read here a few chunks at a time
        (``next_chunks``: from the page cache, or in a thread), and we wait
        for the send buffer to drain in between, so memory stays bounded
        whatever the blob's size.  The caller closes ``stream``.
        """
        link = self._link_of(generation)
        link.call_async("storeBlobStart", ())
        while chunks:
            with link.corked():
                for chunk in chunks:
                    link.call_async_data("storeBlobChunk", (), chunk)
            if at_end(chunks):
                break
            await link.drained()
            if not link.is_open:
                raise ClientDisconnected("the connection was lost during an upload")
            chunks = await next_chunks(stream)
        link.call_async("storeBlobEnd", store_args)

    def _load(self, link: ServerLink, oid: bytes, before: bytes) -> asyncio.Future[Any]:
        cache = self.cache
        readahead = self.readahead

        def remember(result: Any) -> Any:
            if result and isinstance(result[0], bytes):
                data, start, end = result
                cache.store(oid, start, end, data)
                readahead.loaded(oid, data)
                return (data, start, end)
            return None

        return link.call(
            "loadBefore", (oid, before), msgid=(oid, before), on_result=remember
        )

    def start_load(
        self, oid: bytes, before: bytes, patience: float
    ) -> Awaitable[LoadResult] | LoadResult:
        """Load for the application, which missed ``oid`` in the cache.

        The siblings readahead proposes are prefetched even when ``oid``
        itself turns out to be cached by now (its prefetch arrived while the
        miss crossed threads): readahead counts them as requested, and
        nobody else would ask for them.
        """
        siblings = self.readahead.missed(oid)
        result: Awaitable[LoadResult] | LoadResult | None
        result = self.cache.load_before(oid, before)
        if result is None:
            link = self.active
            if link is None or not self.state.operational:
                return self._load_when_connected(oid, before, patience)
            result = self._load(link, oid, before)
        if siblings:
            self.prefetch(tuple(siblings), before)
        return result

    def readahead_reached(self, oid: bytes, before: bytes) -> None:
        """The application read ``oid`` from the cache, and it is marked."""
        siblings = self.readahead.reached(oid)
        if siblings:
            self.prefetch(tuple(siblings), before)

    async def _load_when_connected(
        self, oid: bytes, before: bytes, patience: float
    ) -> LoadResult:
        link = await self.operational_link(patience)
        result: LoadResult = await self._load(link, oid, before)
        return result

    def request_oids(self, deliver: Callable[[list[bytes]], object]) -> None:
        """Ask for new oids without waiting: ``deliver`` gets the batch, or
        an empty one when the request failed or there is no connection."""
        link = self.active
        if link is None or not self.state.operational:
            deliver([])
            return

        def arrived(future: asyncio.Future[Any]) -> None:
            failed = future.cancelled() or future.exception() is not None
            deliver([] if failed else list(future.result()))

        link.call("new_oids", ()).add_done_callback(arrived)

    def start_call(
        self, method: str, args: tuple[Any, ...], patience: float
    ) -> Awaitable[Any]:
        """A call to the server, waiting up to ``patience`` for a connection."""
        link = self.active
        if link is not None and self.state.operational:
            return link.call(method, args)
        return self.call(method, args, patience)

    def prefetch(self, oids: tuple[bytes, ...], before: bytes) -> None:
        """Start loading ``oids`` into the cache without waiting."""
        link = self.active
        if link is None or not self.state.operational:
            return
        with link.corked():
            for oid in oids:
                if self.cache.load_before(oid, before) is None:
                    self._load(link, oid, before).add_done_callback(_ignore_outcome)

    async def tpc_finish(
        self,
        token: int,
        generation: int,
        updates: Iterable[Update],
        callback: Callable[[bytes], object],
    ) -> bytes:
        link = self._link_of(generation)
        cache = self.cache

        def finish(tid: Any) -> bytes:
            if tid is None:
                raise POSException.StorageTransactionError(
                    "the server knows no such transaction"
                )
            for oid, data, server_resolved in updates:
                cache.invalidate(oid, tid)
                if data is not None and not server_resolved:
                    cache.store(oid, tid, None, data)
            # ZODB >= 5.6: lastTransaction moves only once the callback
            # has seen the commit; the lock hides the new tid until then.
            with cache.lock:
                cache.set_last_tid(tid)
                callback(tid)
            return bytes(tid)

        try:
            return await link.call("tpc_finish", (token,), on_result=finish)
        except ClientDisconnected:
            raise
        except Exception:
            # The cache may now be out of step with the server: start over.
            link.close()
            raise


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.debug("prefetch failed: %s", future.exception())
