"""One socket to one server: framing, pending calls, and nothing else.

``ServerLink`` is the asyncio protocol for a single connection.  It feeds the
bytes it receives to a sans-IO ``protocol.ClientConnection`` and acts on the
events that come out:

* ``Handshake``: answer with the server's letter and tell the owner, which
  then pipelines ``register``.
* ``Reply`` / ``ErrorReply``: complete the pending call with that msgid.  A
  call may carry an ``on_result`` hook that runs *right here*, before the
  next frame is handled; the cache depends on that (a ``loadBefore`` result
  must be cached before a later ``invalidateTransaction`` is applied).
* ``AsyncCall``: hand it to the owner, which dispatches by a fixed table.

Everything here runs on the connection thread's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, cast

from ..errors import ProtocolError
from ..protocol import (
    AsyncCall,
    ClientConnection,
    ErrorReply,
    Event,
    Handshake,
    Reply,
    State,
)
from .codec import exception_global
from .exceptions import EXPECTED_ERRORS, ClientDisconnected, exception_from_reply

logger = logging.getLogger(__name__)

Address = tuple[str, int] | str
#: An async call waiting to be sent: ``(method, args)``.
QueuedCall = tuple[str, tuple[Any, ...]]


class LinkOwner(Protocol):
    """What a link reports to (the ``ConnectionManager``)."""

    def link_handshaken(self, link: ServerLink) -> None: ...

    def link_message(
        self, link: ServerLink, method: str, args: tuple[Any, ...]
    ) -> None: ...

    def link_lost(self, link: ServerLink, exc: BaseException | None) -> None: ...


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Any]
    on_result: Callable[[Any], Any] | None


class ServerLink(asyncio.Protocol):
    """The connection to one server address."""

    def __init__(self, address: Address, owner: LinkOwner) -> None:
        self.address = address
        self._owner = owner
        self._connection = ClientConnection(find_global=exception_global)
        self._transport: asyncio.Transport | None = None
        self._pending: dict[Any, _Pending] = {}
        self._corked: list[bytes | bytearray] | None = None
        self._last_msgid = 0
        self._lost = False
        #: Set while the send buffer is below its high-water mark.
        self._writable = asyncio.Event()
        self._writable.set()
        #: What made us close the connection ourselves, if anything did.
        self._failure: BaseException | None = None
        self.read_only = False
        self.protocol_version: bytes | None = None
        #: Invalidations received before this link became the active one.
        self.early_invalidations: list[tuple[bytes, list[bytes]]] | None = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        return f"<ServerLink {self.address!r}>"

    # -- asyncio.Protocol ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            events = self._connection.receive_data(data)
        except ProtocolError as exc:
            logger.error("%r sent bad data: %s", self, exc)
            self._failure = exc
            self.close()
            return
        for event in events:
            if self._lost:
                return
            self._handle(event)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def drained(self) -> None:
        """Wait until the send buffer has room (or the connection is gone)."""
        await self._writable.wait()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._writable.set()
        self._connection.close()
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if not entry.future.done():
                entry.future.set_exception(
                    ClientDisconnected(f"connection to {self.address!r} lost")
                )
        if not self.done.done():
            self.done.set_result(None)
        self._owner.link_lost(self, exc or self._failure)

    # -- events ----------------------------------------------------------

    def _handle(self, event: Event) -> None:
        if isinstance(event, Reply):
            self._complete(event.msgid, event.result, None)
        elif isinstance(event, ErrorReply):
            exc = exception_from_reply(event.class_name, event.payload)
            if not isinstance(exc, EXPECTED_ERRORS):
                logger.error(
                    "%r: %s from server: %r", self, event.class_name, event.payload
                )
            self._complete(event.msgid, None, exc)
        elif isinstance(event, AsyncCall):
            self._owner.link_message(self, event.method, event.args)
        elif isinstance(event, Handshake):
            self.protocol_version = self._connection.protocol
            self._write(self._connection.handshake())
            self._owner.link_handshaken(self)
        else:
            logger.error("%r: unexpected %r from the server", self, event)
            self.close()

    def _complete(self, msgid: Any, result: Any, exc: BaseException | None) -> None:
        entry = self._pending.pop(msgid, None)
        if entry is None:
            logger.warning("%r: reply to unknown message %r dropped", self, msgid)
            return
        if exc is None and entry.on_result is not None:
            try:
                result = entry.on_result(result)
            except Exception as hook_error:
                exc = hook_error
        if entry.future.done():
            return
        if exc is None:
            entry.future.set_result(result)
        else:
            entry.future.set_exception(exc)

    # -- sending ---------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return not self._lost and self._connection.state is State.OPEN

    def call(
        self,
        method: str,
        args: tuple[Any, ...],
        *,
        msgid: Any = None,
        on_result: Callable[[Any], Any] | None = None,
    ) -> asyncio.Future[Any]:
        """Send a synchronous call; the future completes with its reply.

        Calls with an explicit ``msgid`` that is already in flight share the
        first call's future (ZEO's trick for identical ``loadBefore``s).
        """
        if msgid is not None and msgid in self._pending:
            return self._pending[msgid].future
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self.is_open:
            future.set_exception(
                ClientDisconnected(f"not connected to {self.address!r}")
            )
            return future
        if msgid is None:
            self._last_msgid += 1
            msgid = self._last_msgid
        self._pending[msgid] = _Pending(future, on_result)
        self._write(self._connection.call(msgid, method, args))
        return future

    def call_async(self, method: str, args: tuple[Any, ...]) -> None:
        if not self.is_open:
            raise ClientDisconnected(f"not connected to {self.address!r}")
        self._write(self._connection.call_async(method, args))

    def call_async_data(
        self, method: str, args: tuple[Any, ...], data: bytes | bytearray
    ) -> None:
        """``call_async(method, (*args, data))`` without copying ``data``."""
        if not self.is_open:
            raise ClientDisconnected(f"not connected to {self.address!r}")
        for part in self._connection.call_async_parts(method, args, data):
            self._write(part)

    def call_async_many(
        self,
        calls: Iterable[QueuedCall],
        on_error: Callable[[BaseException], object] | None = None,
    ) -> None:
        """Send async calls in one write; one that cannot be encoded is
        logged, reported to ``on_error`` and left out."""
        if not self.is_open:
            raise ClientDisconnected(f"not connected to {self.address!r}")
        with self.corked():
            for method, args in calls:
                try:
                    self._write(self._connection.call_async(method, args))
                except Exception as exc:
                    logger.error("cannot send %s: %s", method, exc)
                    if on_error is not None:
                        on_error(exc)

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """Hold back what is written inside, then send it in one write."""
        if self._corked is not None:  # already corked by a caller
            yield
            return
        self._corked = []
        try:
            yield
        finally:
            frames, self._corked = self._corked, None
            if self._transport is not None and not self._transport.is_closing():
                self._transport.writelines(frames)

    def heartbeat(self) -> None:
        if self.is_open:
            self._write(self._connection.heartbeat())

    def _write(self, data: bytes | bytearray) -> None:
        if self._corked is not None:
            self._corked.append(data)
        elif self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def peername(self) -> Any:
        if self._transport is None:
            return None
        return self._transport.get_extra_info("peername") or self.address

    def close(self) -> None:
        """Close the socket; ``connection_lost`` follows and fails pending calls."""
        if self._transport is not None:
            self._transport.close()
        elif not self.done.done():
            self._lost = True
            self.done.set_result(None)
