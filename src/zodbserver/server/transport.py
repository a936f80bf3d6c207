"""asyncio glue: one ``ServerProtocol`` per accepted connection.

It feeds received bytes to the sans-IO ``ServerConnection``, dispatches the
resulting calls through the method table to the connection's ``Session``,
and writes replies.  Replies to calls that complete at once are written in
the order the calls arrived; a call that has to wait (a vote queued for the
commit lock, a pack, an iterator step in a thread) is answered when it
completes, which ZEO clients allow since they match replies by msgid.

Writes produced while handling one chunk of input are batched into a single
``writelines``; so are writes made by one callback outside of that (a
deferred reply and the ``info`` before it, a blob's chunks): they are
flushed by a callback scheduled with the first of them, or as soon as
they reach ``FLUSH_BYTES``.  When a client
stops reading and our send buffer fills up we stop reading from it too, so
one slow client cannot make us buffer without bound.  Reading stops as
well while the session's blob upload has more bytes waiting for a worker
thread to write them than its bound (``hold_reading``): a client that
sends faster than the disk takes makes the server buffer no more.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Iterator
from typing import Any, cast

from ZODB.POSException import ConflictError, POSKeyError, ReadConflictError

from ..chunks import Chunk, at_end, next_chunks
from ..errors import FrameTooLargeError, RemoteProtocolError
from ..protocol import (
    AsyncCall,
    Call,
    Handshake,
    Heartbeat,
    ServerConnection,
    StatusProbe,
)
from ..protocol.connection import State
from ..protocol.messages import MessageId
from .access import Credentials, credentials
from .methods import METHODS, TRANSACTION_CALLS, Method
from .session import Session
from .storage_server import StorageServer
from .tasks import Later
from .traffic import Closure, ProtocolFault, Refusal

logger = logging.getLogger(__name__)

#: Replies batched before a write, when a chunk holds many calls, and the
#: bytes after which a batch is written even if shorter.
FLUSH_WRITES = 64
FLUSH_BYTES = 256 * 1024

#: A client to which this many times its buffer limit is written while its
#: reading is paused (invalidations keep coming) is closed at once.
HARD_LIMIT_FACTOR = 4
#: ... and never less than this.
HARD_LIMIT_FLOOR = 16 * 1024 * 1024

INVALIDATE = "invalidateTransaction"

#: How a TLS client's first bytes begin: a handshake record, TLS 1.x.  No
#: ZEO frame starts so: its length prefix would be over 369 MB.
TLS_HANDSHAKE = b"\x16\x03"

#: Errors that are part of normal operation and not worth a traceback.
QUIET_ERRORS = (POSKeyError, ConflictError, ReadConflictError)


class ServerProtocol(asyncio.Protocol):
    def __init__(self, server: StorageServer, connections: set[ServerProtocol]) -> None:
        settings = server.settings
        announce = (b"M" if settings.msgpack else b"Z") + b"5"
        self.connection = ServerConnection(announce, settings.max_frame_size)
        self.server = server
        self._traffic = server.traffic
        self.session = Session(server, self)
        self.label = "unconnected"
        #: Who the client is: its address, its TLS certificate's names.
        self.credentials = Credentials()
        #: Set until the first bytes of a plain-TCP client are seen: a TLS
        #: client on a plain port is told apart from junk by them.
        self._first_plain_data = False
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        #: Writes not yet handed to the transport (None: none pending), and
        #: their size.
        self._batch: list[bytes | bytearray] | None = None
        self._batch_bytes = 0
        #: The batch is flushed by a callback, not by ``_handle_events``.
        self._flush_scheduled = False
        #: Calls of a received chunk not handled yet, because the replies
        #: before them filled the send buffer: handled when it drains.
        self._backlog: Iterator[object] | None = None
        #: Closes a connection that never registers, or that stays over its
        #: send-buffer limit (a client that does not read its replies).
        self._register_timer: asyncio.TimerHandle | None = None
        self._slow_timer: asyncio.TimerHandle | None = None
        #: Bytes written since the send buffer passed its limit.
        self._written_while_paused = 0
        self._loop = asyncio.get_running_loop()
        self.closed = False
        #: Done once ``connection_lost`` has run.
        self.lost: asyncio.Future[None] = self._loop.create_future()
        #: Set while the transport's send buffer is below its high-water mark.
        self._writable = asyncio.Event()
        self._writable.set()
        #: While not done, no more calls are read (``hold_reading``).
        self._held: asyncio.Future[None] | None = None

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        tls = transport.get_extra_info("ssl_object")
        self._first_plain_data = tls is None
        self.credentials = credentials(
            peername,
            transport.get_extra_info("peercert"),
            tls.getpeercert(binary_form=True) if tls is not None else None,
        )
        self.label = address_label(peername)
        if self.credentials.names:
            self.label = f"{self.credentials.names[0]} at {self.label}"
        settings = self.server.settings
        limit = settings.max_connections
        if limit is not None and len(self._connections) >= limit:
            self._traffic.refused[Refusal.MAX_CONNECTIONS] += 1
            logger.warning(
                "%s: refused: max-connections (%d) are open", self.label, limit
            )
            self.closed = True
            self._transport.close()
            return
        self._connections.add(self)
        buffer_limit = settings.connection_buffer_limit
        self._transport.set_write_buffer_limits(
            high=buffer_limit, low=buffer_limit // 4
        )
        self._register_timer = self._loop.call_later(
            settings.register_timeout, self._check_registered
        )
        self._transport.write(self.connection.greeting())

    def data_received(self, data: bytes) -> None:
        self._traffic.received_bytes += len(data)
        if self._first_plain_data:
            self._first_plain_data = False
            if data.startswith(TLS_HANDSHAKE):
                self._traffic.refused[Refusal.TLS_ON_PLAIN_PORT] += 1
                logger.warning(
                    "%s: a TLS client on a plain port (this server has no <ssl>), "
                    "closing",
                    self.label,
                )
                self.close()
                return
        events: Iterator[object] = self.connection.iter_events(data)
        if self._backlog is not None:  # bytes read before reading paused
            events = itertools.chain(self._backlog, events)
        self._handle_events(events)

    def _handle_events(self, events: Iterator[object]) -> None:
        """Handle calls until the send buffer passes its limit; keep the
        rest in ``_backlog`` until it drains (reading is paused meanwhile)."""
        self._backlog = None
        if self._batch is None:
            self._batch = []
        try:
            for event in events:
                if self.closed:
                    break
                self._handle(event)
                if self._batch is not None and (
                    len(self._batch) >= FLUSH_WRITES or self._batch_bytes >= FLUSH_BYTES
                ):
                    self._flush()
                    self._batch = []
                if not self._may_read():
                    self._backlog = events
                    break
        except RemoteProtocolError as exc:
            self._traffic.protocol_errors[
                ProtocolFault.FRAME_TOO_LARGE
                if isinstance(exc, FrameTooLargeError)
                else ProtocolFault.MALFORMED
            ] += 1
            logger.warning("%s: protocol error, closing: %s", self.label, exc)
            self.close()
        finally:
            self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._backlog = None
        for timer in (self._register_timer, self._slow_timer):
            if timer is not None:
                timer.cancel()
        self.connection.close()
        self._connections.discard(self)
        if exc is not None:
            logger.info("%s: connection lost: %s", self.label, exc)
        self.session.disconnected()
        self._writable.set()  # wake a blob download so that it ends
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self._writable.clear()
        self._written_while_paused = 0
        if self._transport is not None:
            self._transport.pause_reading()
        self._slow_timer = self._loop.call_later(
            self.server.settings.slow_client_timeout, self._too_slow
        )

    def resume_writing(self) -> None:
        self._writable.set()
        if self._slow_timer is not None:
            self._slow_timer.cancel()
            self._slow_timer = None
        self._resume_reading()

    def _may_read(self) -> bool:
        return self._writable.is_set() and self._held is None

    def _resume_reading(self) -> None:
        """Handle the calls kept back, then read again, unless something
        still holds reading."""
        if not self._may_read() or self.closed:
            return
        if self._backlog is not None:
            self._handle_events(self._backlog)
        transport = self._transport
        if self._may_read() and transport is not None and not transport.is_closing():
            transport.resume_reading()

    def _too_slow(self) -> None:
        self._slow_timer = None
        self._drop_slow_client(
            f"has not read its replies for "
            f"{self.server.settings.slow_client_timeout:g} s"
        )

    def _drop_slow_client(self, why: str) -> None:
        transport = self._transport
        if transport is None or self.closed:
            return
        self._traffic.closed[Closure.SLOW_CLIENT] += 1
        logger.warning(
            "%s: %s (%d bytes unsent); closing",
            self.label,
            why,
            transport.get_write_buffer_size(),
        )
        self.closed = True
        self.connection.close()
        transport.abort()

    def _check_registered(self) -> None:
        self._register_timer = None
        if self.session.hosted is not None or self.closed:
            return
        self._traffic.closed[Closure.REGISTER_TIMEOUT] += 1
        logger.warning(
            "%s: did not register within %g s; closing",
            self.label,
            self.server.settings.register_timeout,
        )
        self.close()

    # -- the Peer interface the session uses --------------------------------

    def send_async(self, method: str, args: tuple[Any, ...]) -> None:
        if not self.closed and self.connection.state is State.OPEN:
            if method == INVALIDATE:
                self._write(self._invalidation_frame(args))
            else:
                self._write(self.connection.call_async(method, args))

    def _invalidation_frame(self, args: tuple[Any, ...]) -> bytes:
        """The frame of ``invalidateTransaction(tid, oids)``, encoded once
        for every session it goes to: a commit hands each the same list."""
        tid, oids = args
        encoding = self.connection.encoding
        shared_invalidations = self.server.shared_invalidations
        shared = shared_invalidations.get(encoding)
        if shared is not None and shared[1] is oids and shared[0] == tid:
            return shared[2]
        frame = self.connection.call_async(INVALIDATE, args)
        if not shared_invalidations:
            # Let go of the oids and the frame once this commit is published.
            self._loop.call_soon(shared_invalidations.clear)
        shared_invalidations[encoding] = (tid, oids, frame)
        return frame

    def _send_async_data(self, method: str, args: tuple[Any, ...], data: Chunk) -> None:
        """``send_async(method, (*args, data))`` without copying ``data``."""
        if not self.closed and self.connection.state is State.OPEN:
            for part in self.connection.call_async_parts(method, args, data):
                self._write(part)

    async def send_blob(self, oid: bytes, serial: bytes, path: str) -> None:
        """Stream a blob file as receiveBlobStart/Chunk/Stop calls.

        The file is read a few chunks at a time (``chunks.next_chunks``:
        straight from the page cache, or in a thread when that would wait
        for the disk), and we wait for the send buffer to drain between
        reads: memory stays bounded whatever the blob's size, and other
        clients are served meanwhile.
        """
        self.send_async("receiveBlobStart", (oid, serial))
        # loadBlob has just looked the file up: its inode is in memory.
        with open(path, "rb") as stream:  # noqa: ASYNC230
            chunks = await next_chunks(stream, self.server.tasks.run_in_thread)
            while chunks and not self.closed:
                for chunk in chunks:
                    self._traffic.blob_downloaded_bytes += len(chunk)
                    self._send_async_data("receiveBlobChunk", (oid, serial), chunk)
                if at_end(chunks):
                    break
                self._flush()
                await self._writable.wait()
                chunks = await next_chunks(stream, self.server.tasks.run_in_thread)
        self.send_async("receiveBlobStop", (oid, serial))

    def hold_reading(self, until: asyncio.Future[None]) -> None:
        """Handle none of this client's calls until ``until`` is done (its
        upload's writes have caught up); the rest of the chunk at hand waits
        in the backlog, as when the send buffer is full."""
        if until.done() or self.closed or self._held is until:
            return
        self._held = until
        if self._transport is not None:
            self._transport.pause_reading()
        until.add_done_callback(self._release_hold)

    def _release_hold(self, until: asyncio.Future[None]) -> None:
        if self._held is until:
            self._held = None
            self._resume_reading()

    async def drained(self) -> None:
        """Wait until the send buffer is below its high-water mark."""
        self._flush()
        await self._writable.wait()

    def close(self) -> None:
        """Close after writing what is already queued (e.g. a ruok answer)."""
        if self._transport is not None and not self.closed:
            self._flush()
            self.closed = True
            self.connection.close()
            self._transport.close()

    def _flush(self) -> None:
        batch, self._batch = self._batch, None
        self._batch_bytes = 0
        self._flush_scheduled = False
        transport = self._transport
        if batch and transport is not None and not transport.is_closing():
            transport.writelines(batch)
            limit = max(
                HARD_LIMIT_FACTOR * self.server.settings.connection_buffer_limit,
                HARD_LIMIT_FLOOR,
            )
            if self._written_while_paused > limit:
                self._drop_slow_client(
                    f"reads nothing while {self._written_while_paused} bytes more "
                    f"were sent to it (over {limit})"
                )

    # -- dispatch -------------------------------------------------------------

    def _write(self, data: bytes | bytearray) -> None:
        self._traffic.sent_bytes += len(data)
        self._batch_bytes += len(data)
        if not self._writable.is_set():
            self._written_while_paused += len(data)
        if self._batch is not None:
            self._batch.append(data)
            if self._flush_scheduled and self._batch_bytes >= FLUSH_BYTES:
                # Replies that complete together (deferred ones, a burst of
                # them) are written in bounded batches too, so that the
                # buffer limit and the hard limit see them as they come.
                self._flush()
        elif self._transport is not None and not self._transport.is_closing():
            self._batch = [data]
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _handle(self, event: object) -> None:
        if isinstance(event, Call):
            self._call(event.msgid, event.method, event.args)
        elif isinstance(event, AsyncCall):
            self._call_async(event.method, event.args)
        elif isinstance(event, Handshake):
            logger.info("%s: connected, protocol %r", self.label, event.protocol)
        elif isinstance(event, StatusProbe):
            self._write(ServerConnection.status(self.server.ruok()))
            self.close()
        elif not isinstance(event, Heartbeat):  # pragma: no cover - exhaustive
            raise RemoteProtocolError(f"unexpected message {event!r}")

    def _lookup(
        self, method: str, args: tuple[Any, ...]
    ) -> tuple[Method, tuple[Any, ...]]:
        spec = METHODS.get(method)
        if spec is None:
            self._traffic.protocol_errors[ProtocolFault.UNKNOWN_METHOD] += 1
            raise RemoteProtocolError(f"unknown method {method[:80]!r}")
        if self.session.hosted is None and not spec.before_register:
            self._traffic.protocol_errors[ProtocolFault.NOT_REGISTERED] += 1
            raise RemoteProtocolError(f"{method}() called before register()")
        try:
            return spec, spec.bind_arguments(method, args)
        except TypeError:
            self._traffic.protocol_errors[ProtocolFault.BAD_ARGUMENTS] += 1
            raise

    def _call(self, msgid: MessageId, method: str, args: tuple[Any, ...]) -> None:
        try:
            # An asynchronous method sent as a call is answered, as ZEO does.
            spec, arguments = self._lookup(method, args)
            result = spec.function(self.session, *arguments)
        except RemoteProtocolError as exc:
            logger.warning("%s: %s", self.label, exc)
            self._write(self.connection.error(msgid, exc))
            return
        except Exception as exc:
            self._reply_error(msgid, method, exc)
            return
        if spec.deferred:
            self.server.tasks.spawn(
                self._reply_later(msgid, method, result), reply=True
            )
        elif type(result) is Later:
            self.server.tasks.spawn(
                self._reply_later(msgid, method, result.result()), reply=True
            )
        else:
            self._write(self.connection.reply(msgid, result))

    async def _reply_later(
        self, msgid: MessageId, method: str, pending: Awaitable[object]
    ) -> None:
        try:
            result = await pending
        except asyncio.CancelledError:
            if not self.closed:
                self._write(
                    self.connection.error(
                        msgid, RuntimeError(f"{method}() was cancelled")
                    )
                )
            return
        except Exception as exc:
            if not self.closed:
                self._reply_error(msgid, method, exc)
            elif not isinstance(exc, QUIET_ERRORS):
                logger.info(
                    "%s: %s() failed after disconnect: %r", self.label, method, exc
                )
            return
        if not self.closed:
            self._write(self.connection.reply(msgid, result))

    def _reply_error(self, msgid: MessageId, method: str, exc: Exception) -> None:
        if isinstance(exc, TypeError):
            logger.warning("%s: %s", self.label, exc)
        elif not isinstance(exc, QUIET_ERRORS):
            logger.info("%s: %s() raised %r", self.label, method, exc, exc_info=True)
        self._write(self.connection.error(msgid, exc))

    def _call_async(self, method: str, args: tuple[Any, ...]) -> None:
        """Run an async call.  It cannot be answered: when it belongs to the
        client's transaction, its failure -- a bad argument included -- fails
        that transaction at the vote; junk outside of one drops the client."""
        try:
            spec, arguments = self._lookup(method, args)
            if spec.synchronous:
                self._traffic.protocol_errors[ProtocolFault.BAD_ARGUMENTS] += 1
                raise RemoteProtocolError(f"{method}() must be called synchronously")
        except TypeError as exc:
            if method in TRANSACTION_CALLS:
                self.session.async_call_failed(method, exc)
                return
            self._drop_for_junk(exc)
            return
        except RemoteProtocolError as exc:
            self._drop_for_junk(exc)
            return
        try:
            spec.function(self.session, *arguments)
        except Exception as exc:
            if method in TRANSACTION_CALLS:
                self.session.async_call_failed(method, exc)
            else:
                logger.warning("%s: async %s() failed: %r", self.label, method, exc)

    def _drop_for_junk(self, exc: Exception) -> None:
        logger.warning("%s: %s; closing", self.label, exc)
        self.close()


def address_label(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) if peer else "unix socket"
