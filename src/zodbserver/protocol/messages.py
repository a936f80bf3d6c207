"""The messages that travel between a ZEO client and server.

Every frame after the handshake is the 4-tuple ``(msgid, flag, name, args)``:

* ``Call``       ``(n, False, method, args)`` -- a synchronous call; the peer
  answers with a ``Reply`` or ``ErrorReply`` carrying the same ``msgid``.
* ``AsyncCall``  ``(0, True, method, args)`` -- never answered.
* ``Reply``      ``(msgid, 0, ".reply", result)``.
* ``ErrorReply`` ``(msgid, 2, ".reply", (class_name, payload))`` where
  ``payload`` is the exception's ``__dict__`` or its ``args``.
* ``Heartbeat``  ``(-1, 0, ".reply", None)`` -- a client keep-alive.

``msgid`` is usually an int, but ZEO clients use the tuple ``(oid, tid)``
for ``loadBefore``; it must be echoed back verbatim (``MessageId``).

Two pseudo-events come from the handshake: ``Handshake`` (the peer chose a
protocol) and ``StatusProbe`` (a ``ruok`` request instead of a handshake).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: A call's message id, as the server checks it: an int, or a ``loadBefore``
#: call's ``(oid, tid)``.
MessageId = int | tuple[bytes, ...]

REPLY = ".reply"
HEARTBEAT_MSGID = -1
ERROR_FLAG = 2


@dataclass(frozen=True, slots=True)
class Handshake:
    """The peer announced (server) or answered (client) a protocol."""

    protocol: bytes

    @property
    def encoding(self) -> bytes:
        return self.protocol[:1]


@dataclass(frozen=True, slots=True)
class StatusProbe:
    """A client sent ``ruok`` instead of a handshake."""


@dataclass(frozen=True, slots=True)
class Call:
    msgid: MessageId
    method: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class AsyncCall:
    method: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Reply:
    msgid: Any
    result: Any


@dataclass(frozen=True, slots=True)
class ErrorReply:
    msgid: Any
    class_name: str
    payload: Any


@dataclass(frozen=True, slots=True)
class Heartbeat:
    pass


Event = Handshake | StatusProbe | Call | AsyncCall | Reply | ErrorReply | Heartbeat
