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
flushed by a callback scheduled with the first of them.  When a client
stops reading and our send buffer fills up we stop reading from it too, so
one slow client cannot make us buffer without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
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
from .traffic import ProtocolFault, Refusal

logger = logging.getLogger(__name__)

#: Replies batched before a write, when a chunk holds many calls.
FLUSH_WRITES = 64

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
        #: Writes not yet handed to the transport (None: none pending).
        self._batch: list[bytes | bytearray] | None = None
        self._loop = asyncio.get_running_loop()
        self.closed = False
        #: Done once ``connection_lost`` has run.
        self.lost: asyncio.Future[None] = self._loop.create_future()
        #: Set while the transport's send buffer is below its high-water mark.
        self._writable = asyncio.Event()
        self._writable.set()

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
        self._connections.add(self)
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
        if self._batch is None:
            self._batch = []
        try:
            for event in self.connection.iter_events(data):
                if self.closed:
                    break
                self._handle(event)
                if self._batch is not None and len(self._batch) >= FLUSH_WRITES:
                    self._flush()
                    self._batch = []
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
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._writable.set()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # -- the Peer interface the session uses --------------------------------

    def send_async(self, method: str, args: tuple[Any, ...]) -> None:
        if not self.closed and self.connection.state is State.OPEN:
            self._write(self.connection.call_async(method, args))

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

    def close(self) -> None:
        """Close after writing what is already queued (e.g. a ruok answer)."""
        if self._transport is not None and not self.closed:
            self._flush()
            self.closed = True
            self.connection.close()
            self._transport.close()

    def _flush(self) -> None:
        batch, self._batch = self._batch, None
        if batch and self._transport is not None and not self._transport.is_closing():
            self._transport.writelines(batch)

    # -- dispatch -------------------------------------------------------------

    def _write(self, data: bytes | bytearray) -> None:
        self._traffic.sent_bytes += len(data)
        if self._batch is not None:
            self._batch.append(data)
        elif self._transport is not None and not self._transport.is_closing():
            self._batch = [data]
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
