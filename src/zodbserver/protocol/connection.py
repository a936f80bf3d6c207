"""The ZEO 5 connection state machine, for both ends, without any I/O.

Theory of operation
-------------------

A connection goes through three states::

    HANDSHAKE --(protocol agreed)--> OPEN --(error or close)--> CLOSED

The **server speaks first**: on accept it sends one frame holding its
protocol, ``b"M5"`` (msgpack) or ``b"Z5"`` (pickle).  The **client answers**
with the server's letter followed by the version it will speak, which is
``min(server_version, b"5")`` compared *as bytes* (so ``Z6`` and ``Z99`` get
``Z5`` while ``Z4`` or ``Z10`` are refused).  The server accepts version
``5`` only, and takes the encoding from the letter the client answered with,
whatever it announced.  Instead of a handshake a client may send ``ruok``:
the server answers with one JSON status frame and closes.

Once OPEN, each frame decodes to one event (see ``messages``).  A peer that
sends anything malformed gets a ``RemoteProtocolError``; after that the
connection is CLOSED and feeds nothing more.  Methods that produce bytes
raise ``LocalProtocolError`` when called in a state that does not allow them.

``ServerConnection`` and ``ClientConnection`` hold no sockets: feed them the
bytes you received, write the bytes they return.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from . import codec as codec_module
from .codec import ENCODINGS, MSGPACK, Codec, FindGlobal, plain_data_global
from .framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame
from .messages import (
    HEARTBEAT_MSGID,
    REPLY,
    AsyncCall,
    Call,
    ErrorReply,
    Event,
    Handshake,
    Heartbeat,
    MessageId,
    Reply,
    StatusProbe,
)

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = b"5"
STATUS_PROBE = b"ruok"


class State(enum.Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


def negotiate_version(announced: bytes) -> bytes:
    """The version a client answers to a server's announcement.

    ZEO compares versions as byte strings, and so do we for compatibility.
    """
    version = min(announced[1:], PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise RemoteProtocolError(f"server protocol {announced!r} is not supported")
    return version


class _Connection:
    """What the two ends share: framing, codec and the state."""

    def __init__(self, max_frame_size: int, find_global: FindGlobal) -> None:
        self._frames = FrameDecoder(max_frame_size)
        self._find_global = find_global
        self._codec: Codec | None = None
        self.state = State.HANDSHAKE
        self.protocol: bytes | None = None

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed received bytes; return the events they complete."""
        if self.state is not State.OPEN:
            return list(self.iter_events(data))
        codec = self._codec
        assert codec is not None
        receive = self._receive_message
        try:
            payloads = self._frames.feed(data)
            return [receive(*codec.decode(payload)) for payload in payloads]
        except ProtocolError:
            self.state = State.CLOSED
            raise

    def iter_events(self, data: bytes) -> Iterator[Event]:
        """Feed received bytes; yield the events they complete, each decoded
        only when the previous one has been taken: a chunk of hundreds of
        pipelined calls is not held decoded all at once."""
        if self.state is State.CLOSED:
            return
        try:
            for payload in self._frames.feed(data):
                if self.state is State.HANDSHAKE:
                    yield self._receive_handshake(payload)
                elif self.state is State.OPEN:
                    assert self._codec is not None
                    yield self._receive_message(*self._codec.decode(payload))
                else:
                    break
        except ProtocolError:
            self.state = State.CLOSED
            raise

    def close(self) -> None:
        """Stop for good, and let go of the codec's and the framing's buffers
        now rather than whenever the connection's objects are collected."""
        self.state = State.CLOSED
        self._codec = None
        self._frames = FrameDecoder(self._frames.max_frame_size)

    # The two ends differ only in how they read the handshake and messages.
    def _receive_handshake(self, payload: bytes) -> Event:
        raise LocalProtocolError("abstract")  # pragma: no cover

    def _receive_message(self, msgid: Any, flag: Any, name: str, args: Any) -> Event:
        raise LocalProtocolError("abstract")  # pragma: no cover

    def _open(self, protocol: bytes) -> None:
        self.protocol = protocol
        self._codec = Codec(protocol[:1], self._find_global)
        self.state = State.OPEN

    def _encode(self, message: tuple[Any, Any, str, Any]) -> bytes:
        return encode_frame(self._codec_for_sending().encode(message))

    @property
    def encoding(self) -> bytes | None:
        return self.protocol[:1] if self.protocol else None

    def call_async(self, method: str, args: tuple[Any, ...]) -> bytes:
        """Bytes for an asynchronous call (never answered)."""
        return self._encode((0, True, method, args))

    def call_async_parts(
        self, method: str, args: tuple[Any, ...], data: bytes | bytearray
    ) -> tuple[bytes | bytearray, ...]:
        """``call_async(method, (*args, data))`` as pieces to write in turn.

        With msgpack the last argument's bytes are the frame's last bytes,
        so ``data`` is returned as it is, after a header that frames and
        encodes everything before it: a blob chunk is never copied into an
        encoder's buffer and then again into a frame.  The pieces joined
        are exactly what ``call_async`` would have produced.
        """
        if self.encoding != MSGPACK:
            return (self.call_async(method, (*args, bytes(data))),)
        # An empty last argument encodes as bin 8 of length 0 (c4 00);
        # swap that for the header of the real length.
        head = self._codec_for_sending().encode((0, True, method, (*args, b"")))
        size = len(data)
        if size < 0x100:
            header = b"\xc4" + size.to_bytes(1, "big")
        elif size < 0x10000:
            header = b"\xc5" + size.to_bytes(2, "big")
        else:
            header = b"\xc6" + size.to_bytes(4, "big")
        head = head[:-2] + header
        return (len(head) + size).to_bytes(4, "big") + head, data

    def _codec_for_sending(self) -> Codec:
        if self.state is not State.OPEN or self._codec is None:
            raise LocalProtocolError(f"cannot send in state {self.state.value}")
        return self._codec


def _check_msgid(msgid: Any) -> None:
    """Message ids are ints, or ``(oid, tid)`` pairs for ``loadBefore``."""
    if type(msgid) is int:
        return
    if type(msgid) is tuple and len(msgid) == 2:
        # The loadBefore fast path, checked without a generator.
        oid, tid = msgid
        if type(oid) is bytes and type(tid) is bytes and len(oid) <= 8 >= len(tid):
            return
    if isinstance(msgid, int):
        return
    if (
        isinstance(msgid, tuple | list)
        and len(msgid) <= 2
        and all(isinstance(part, bytes) and len(part) <= 8 for part in msgid)
    ):
        return
    raise RemoteProtocolError(
        f"a message id must be an int, got {type(msgid).__name__}"
    )


def _as_args(args: Any) -> tuple[Any, ...]:
    if isinstance(args, tuple):
        return args
    if isinstance(args, list):
        return tuple(args)
    raise RemoteProtocolError(
        f"call arguments must be a sequence, got {type(args).__name__}"
    )


class ServerConnection(_Connection):
    """The server's end of one client connection."""

    def __init__(
        self,
        announce: bytes = MSGPACK + PROTOCOL_VERSION,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        super().__init__(max_frame_size, plain_data_global)
        if announce[:1] not in ENCODINGS:
            raise LocalProtocolError(f"cannot announce {announce!r}")
        self.announce = announce

    def greeting(self) -> bytes:
        """The first bytes the server sends, right after accepting."""
        return encode_frame(self.announce)

    def _receive_handshake(self, payload: bytes) -> Event:
        if payload == STATUS_PROBE:
            self.state = State.CLOSED
            return StatusProbe()
        if payload[:1] in ENCODINGS and payload[1:] == PROTOCOL_VERSION:
            self._open(payload)
            return Handshake(payload)
        raise RemoteProtocolError(f"bad handshake {payload[:40]!r}")

    def _receive_message(self, msgid: Any, flag: Any, name: str, args: Any) -> Event:
        if msgid == HEARTBEAT_MSGID:
            return Heartbeat()
        if name == REPLY:
            raise RemoteProtocolError("a client does not send replies")
        if flag:
            return AsyncCall(name, _as_args(args))
        _check_msgid(msgid)
        if isinstance(msgid, list):
            msgid = tuple(msgid)
        return Call(msgid, name, _as_args(args))

    def reply(self, msgid: MessageId, result: object) -> bytes:
        """Bytes for a reply; an unencodable result becomes an error reply."""
        try:
            return self._encode((msgid, 0, REPLY, result))
        except LocalProtocolError:
            if self.state is not State.OPEN:
                raise
            logger.exception("cannot encode the reply to message %r", msgid)
            return self.error(msgid, ValueError("Couldn't pickle response"))

    def error(self, msgid: MessageId, exc: BaseException) -> bytes:
        """Bytes for an error reply in the shape ZEO clients decode."""
        name, payload = codec_module.exception_payload(exc)
        try:
            return self._encode((msgid, 2, REPLY, (name, payload)))
        except LocalProtocolError:
            if self.state is not State.OPEN:
                raise
            return self._encode((msgid, 2, REPLY, (name, (str(exc),))))

    @staticmethod
    def status(status: Mapping[str, object]) -> bytes:
        """The answer to a ``ruok`` probe: one frame of ASCII JSON."""
        return encode_frame(json.dumps(status).encode("ascii"))


class ClientConnection(_Connection):
    """The client's end of a connection to a server."""

    def __init__(
        self,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        find_global: FindGlobal = plain_data_global,
    ) -> None:
        """``find_global`` decides which pickle globals a ``Z`` server may
        name in what it sends (ZEO servers pickle some exception objects)."""
        super().__init__(max_frame_size, find_global)
        self._answer: bytes | None = None

    def _receive_handshake(self, payload: bytes) -> Event:
        if payload[:1] not in ENCODINGS:
            raise RemoteProtocolError(f"bad server handshake {payload[:40]!r}")
        answer = payload[:1] + negotiate_version(payload)
        self._answer = answer
        self._open(answer)
        return Handshake(payload)

    def handshake(self) -> bytes:
        """Bytes answering the server's announcement (after ``Handshake``)."""
        if self._answer is None:
            raise LocalProtocolError("the server has not announced a protocol yet")
        return encode_frame(self._answer)

    def _receive_message(self, msgid: Any, flag: Any, name: str, args: Any) -> Event:
        if name == REPLY:
            if not flag:
                return Reply(msgid, args)
            if not (
                isinstance(args, tuple | list)
                and len(args) == 2
                and isinstance(args[0], str)
            ):
                raise RemoteProtocolError(
                    f"malformed error reply of type {type(args).__name__}"
                )
            class_name, payload = args
            return ErrorReply(msgid, class_name, payload)
        return AsyncCall(name, _as_args(args))

    def call(self, msgid: MessageId, method: str, args: tuple[Any, ...]) -> bytes:
        return self._encode((msgid, False, method, args))

    def heartbeat(self) -> bytes:
        return self._encode((HEARTBEAT_MSGID, 0, REPLY, None))
