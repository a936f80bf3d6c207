"""Choosing a server, keeping the connection, and applying what it says.

Theory of operation
-------------------

``ConnectionManager`` lives on the connection thread's event loop.  For each
server address a *maintainer* task dials, with exponential backoff between
failures, until some link is the active one.  Every link that completes the
handshake asks to register; registration is serialised by a lock and the
first success wins: it becomes ``active``, the other maintainers are
cancelled and their links closed.  With ``read_only_fallback`` a read-only
server is accepted, but the maintainers keep dialing and a writable server
that registers later replaces it.

Before the new link is *operational* the cache is verified against the tid
that ``register`` returned (docs/protocol.md, Cache verification): nothing to do for an
empty or up-to-date cache; ``getInvalidations`` for an older one, clearing
everything when the server cannot tell or when the cache is newer than the
server (which then lost transactions this client saw).  Invalidations
that arrive meanwhile are queued on the link and replayed afterwards if
newer than that tid.  Then ``get_info``, the storage
is told it is connected, and waiting calls proceed.

When the active link is lost, its pending calls fail with
``ClientDisconnected``, the ``generation`` moves on (poisoning any open
transaction), the storage is told, and all maintainers dial again.

Invalidations are applied in arrival order: cache first, then the database,
then the cache's last tid, so ``lastTransaction`` moves only after the
database has seen the invalidations (ZODB >= 5.6).

The cache check itself is ``verification.py``; the storage's requests are
routed to the active link by ``RequestRouting`` (``routing.py``), a part of
the manager.  All of it runs on the connection thread; application threads
read the published ``state`` only (the thread rule: ``state.py``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl as ssl_module
from collections.abc import Callable
from typing import Any, Protocol

from ZODB import POSException

from .cache import ClientCache
from .cache_file import SavedCache
from .link import Address, ServerLink
from .readahead import Readahead
from .routing import RequestRouting
from .state import ConnectionState
from .verification import verify_cache

logger = logging.getLogger(__name__)


class ConnectionListener(Protocol):
    """What the manager tells the storage (called on the loop thread)."""

    def notify_connected(self, state: ConnectionState) -> None: ...

    def notify_disconnected(self) -> None: ...

    def invalidate_transaction(self, tid: bytes, oids: list[bytes]) -> None: ...

    def invalidate_cache(self) -> None: ...


class BlobReceiver(Protocol):
    """Where blobs streamed by ``sendBlob`` go (called on the loop thread)."""

    def receive_start(self, oid: bytes, tid: bytes) -> None: ...

    def receive_chunk(self, oid: bytes, tid: bytes, chunk: bytes) -> None: ...

    def receive_stop(self, oid: bytes, tid: bytes) -> None: ...


class ConnectionManager(RequestRouting):
    """Owns the links to the servers; runs on the connection thread only.

    Application threads read ``state`` and nothing else (``state.py``).
    """

    def __init__(
        self,
        addresses: list[Address],
        storage_key: str,
        cache: ClientCache,
        listener: ConnectionListener,
        *,
        read_only: bool = False,
        read_only_fallback: bool = False,
        min_poll: float = 1.0,
        max_poll: float = 30.0,
        heartbeat_interval: float = 60.0,
        client_label: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        ssl_server_hostname: str | None = None,
        blobs: BlobReceiver | None = None,
        readahead: int = 0,
        saved: SavedCache | None = None,
    ) -> None:
        self.addresses = addresses
        self.readahead = Readahead(readahead)
        self.blobs = blobs
        self.storage_key = storage_key
        self.cache = cache
        #: The cache file's snapshot, until the first verification has read
        #: it into the cache or dropped it.
        self.saved = saved
        self.listener = listener
        self.read_only = read_only
        self.read_only_fallback = read_only_fallback and not read_only
        self.min_poll = min_poll
        self.max_poll = max(max_poll, min_poll)
        self.heartbeat_interval = heartbeat_interval
        self.client_label = client_label
        self.ssl = ssl
        self.ssl_server_hostname = ssl_server_hostname

        self.active: ServerLink | None = None
        #: Published for application threads: replaced, never mutated.
        self.state = ConnectionState(read_only=read_only)
        self.closed = False
        #: Why the last attempt to connect failed, for ClientDisconnected.
        self.last_failure: str | None = None
        self._connected = asyncio.Event()
        self._register_lock = asyncio.Lock()
        self._maintainers: dict[Address, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._links: set[ServerLink] = set()
        #: Links that became active: losing one redials at once, whereas a
        #: failed dial, registration or verification backs off up to
        #: ``max_poll``.
        self._was_active: set[ServerLink] = set()
        self._heartbeat: asyncio.TimerHandle | None = None
        self._server_methods: dict[str, Callable[[ServerLink, tuple[Any, ...]], None]]
        self._server_methods = {
            "invalidateTransaction": self._on_invalidate_transaction,
            "info": self._on_info,
            "receiveBlobStart": self._on_receive_blob_start,
            "receiveBlobChunk": self._on_receive_blob_chunk,
            "receiveBlobStop": self._on_receive_blob_stop,
        }

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        self._maintain_all()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.state = self.state.disconnected()
        self._connected.set()  # wake waiters; they see ``closed``
        self._stop_heartbeat()
        tasks = [*self._maintainers.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        links = set(self._links)
        if self.active is not None:
            links.add(self.active)
        for link in links:
            link.close()
        if links:
            await asyncio.wait([link.done for link in links], timeout=10)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- dialing ---------------------------------------------------------

    def _wanted(self) -> bool:
        """Should the maintainers keep dialing?"""
        if self.closed:
            return False
        if self.active is None:
            return True
        return self.read_only_fallback and self.active.read_only

    def _maintain_all(self) -> None:
        for address in self.addresses:
            task = self._maintainers.get(address)
            if task is None or task.done():
                self._maintainers[address] = asyncio.get_running_loop().create_task(
                    self._maintain(address)
                )

    async def _maintain(self, address: Address) -> None:
        """Dial ``address`` until it, or another address, is the active link."""
        delay = self.min_poll
        while self._wanted():
            link = await self._connect(address)
            if link is not None:
                try:
                    await asyncio.shield(link.done)
                except asyncio.CancelledError:
                    if link is not self.active:
                        link.close()
                    raise
                finally:
                    self._links.discard(link)
                if link in self._was_active:  # redial at once
                    self._was_active.discard(link)
                    delay = self.min_poll
                    continue
            if not self._wanted():
                break
            await asyncio.sleep(delay * (1 + random.random() / 4))
            delay = min(delay * 2, self.max_poll)

    async def _connect(self, address: Address) -> ServerLink | None:
        loop = asyncio.get_running_loop()
        link: ServerLink | None = None

        def factory() -> ServerLink:
            nonlocal link
            link = ServerLink(address, self)
            return link

        try:
            async with asyncio.timeout(max(10.0, self.max_poll)):
                if isinstance(address, str):
                    await loop.create_unix_connection(factory, address, ssl=self.ssl)
                else:
                    host, port = address
                    await loop.create_connection(
                        factory,
                        host or "127.0.0.1",
                        port,
                        ssl=self.ssl,
                        server_hostname=self.ssl_server_hostname if self.ssl else None,
                    )
        except (OSError, TimeoutError) as exc:
            logger.info("connection to %r failed: %s", address, exc)
            self.last_failure = f"connection to {address!r} failed: {exc}"
            return None
        assert link is not None
        self._links.add(link)
        return link

    # -- registration and verification -----------------------------------

    def link_handshaken(self, link: ServerLink) -> None:
        self._spawn(self._register(link))

    async def _register(self, link: ServerLink) -> None:
        async with self._register_lock:
            if not link.is_open or not self._wanted():
                link.close()
                return
            try:
                server_tid = await self._register_call(link)
            except Exception as exc:
                logger.warning("registration with %r failed: %r", link.address, exc)
                self.last_failure = f"registration with {link.address!r} failed: {exc}"
                link.close()
                return
            if self.active is not None:
                if link.read_only:
                    link.close()  # no better than what we have
                    return
                logger.info("switching to the writable server at %r", link.address)
                old = self.active
                self._deactivate(old)
                old.close()
            self._activate(link)
            try:
                await self._verify(link, server_tid)
            except Exception as exc:
                if link.is_open:
                    logger.error("verification with %r failed: %r", link.address, exc)
                    self._was_active.discard(link)  # back off
                    link.close()

    async def _register_call(self, link: ServerLink) -> bytes | None:
        try:
            link.read_only = self.read_only
            return await link.call("register", (self.storage_key, self.read_only))
        except POSException.ReadOnlyError:
            if not self.read_only_fallback:
                raise
        link.read_only = True
        return await link.call("register", (self.storage_key, True))

    def _activate(self, link: ServerLink) -> None:
        self.active = link
        self._was_active.add(link)
        if not (self.read_only_fallback and link.read_only):
            for address, task in self._maintainers.items():
                if address != link.address:
                    task.cancel()
            for other in list(self._links):
                if other is not link:
                    other.close()

    async def _verify(self, link: ServerLink, server_tid: bytes | None) -> None:
        if server_tid is None:
            server_tid = await link.call("lastTransaction", ())
        assert server_tid is not None
        verify_result = await verify_cache(
            link, self.cache, server_tid, self.listener, self.saved
        )
        self.saved = None
        self.cache.set_last_tid(server_tid)
        early = link.early_invalidations or []
        link.early_invalidations = None
        for tid, oids in early:
            if tid > server_tid:
                self._apply_invalidation(tid, oids)
        info = await link.call("get_info", ())
        if link is not self.active or not link.is_open:
            return
        if self.client_label:
            link.call_async("set_client_label", (self.client_label,))
        peer = link.peername()
        self.state = self.state.connected(
            read_only=link.read_only,
            server_address=peer if isinstance(peer, str) else str(tuple(peer)[:2]),
            protocol_version=link.protocol_version,
            verify_result=verify_result,
            info=dict(info),
        )
        # Waiting calls are coroutines on this loop: they resume only after
        # the storage has taken in the new connection.
        self.listener.notify_connected(self.state)
        self._connected.set()
        self._start_heartbeat()
        logger.info("connected to %r (%s)", link.address, verify_result)

    # -- losing links ----------------------------------------------------

    def link_lost(self, link: ServerLink, exc: BaseException | None) -> None:
        self._links.discard(link)
        if exc is not None:
            self.last_failure = f"connection to {link.address!r} lost: {exc}"
        if link is self.active:
            logger.info("disconnected from %r: %s", link.address, exc or "closed")
            self._deactivate(link)
            if not self.closed:
                self._maintain_all()

    def _deactivate(self, link: ServerLink) -> None:
        was_operational = self.state.operational
        self.active = None
        self.state = self.state.disconnected()
        self._connected.clear()
        self._stop_heartbeat()
        if was_operational:
            self.listener.notify_disconnected()

    # -- messages from the server ----------------------------------------

    def link_message(
        self, link: ServerLink, method: str, args: tuple[Any, ...]
    ) -> None:
        handler = self._server_methods.get(method)
        if handler is None:
            logger.error("%r called unknown client method %r", link, method)
            link.close()
            return
        try:
            handler(link, args)
        except Exception:
            logger.exception("%r: handling %s failed", link, method)
            link.close()

    def _on_invalidate_transaction(
        self, link: ServerLink, args: tuple[Any, ...]
    ) -> None:
        tid, oids = args
        if link.early_invalidations is not None:
            link.early_invalidations.append((tid, list(oids)))
        elif link is self.active:
            self._apply_invalidation(tid, list(oids))

    def _apply_invalidation(self, tid: bytes, oids: list[bytes]) -> None:
        self.cache.invalidate_all(oids, tid)
        self.listener.invalidate_transaction(tid, oids)
        if tid < self.cache.get_last_tid():
            # A ZEO server may send another client's invalidation after the
            # reply to our own later commit.  The oids are invalidated all
            # the same; the last tid must not move back.
            logger.warning(
                "invalidation for %s arrived after %s",
                tid.hex(),
                self.cache.get_last_tid().hex(),
            )
            return
        self.cache.set_last_tid(tid)

    def _on_info(self, link: ServerLink, args: tuple[Any, ...]) -> None:
        (info,) = args
        if link is self.active:
            self.state = self.state.with_info(dict(info))

    def _blob_receiver(self) -> BlobReceiver:
        if self.blobs is None:
            raise ValueError("blob data sent to a client without a blob directory")
        return self.blobs

    def _on_receive_blob_start(self, link: ServerLink, args: tuple[Any, ...]) -> None:
        oid, tid = args
        self._blob_receiver().receive_start(oid, tid)

    def _on_receive_blob_chunk(self, link: ServerLink, args: tuple[Any, ...]) -> None:
        oid, tid, chunk = args
        self._blob_receiver().receive_chunk(oid, tid, chunk)

    def _on_receive_blob_stop(self, link: ServerLink, args: tuple[Any, ...]) -> None:
        oid, tid = args
        self._blob_receiver().receive_stop(oid, tid)

    # -- heartbeats ------------------------------------------------------

    def _start_heartbeat(self) -> None:
        self._stop_heartbeat()
        self._heartbeat = asyncio.get_running_loop().call_later(
            self.heartbeat_interval, self._beat
        )

    def _beat(self) -> None:
        if self.active is not None and self.state.operational:
            self.active.heartbeat()
            self._start_heartbeat()

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
