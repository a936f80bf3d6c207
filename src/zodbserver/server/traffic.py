"""Server-wide counters: bytes on the wire, blob bytes, refusals, errors.

One ``Traffic`` per server, owned by the event loop: the transports and
sessions add to it as they work (an integer addition each time, nothing
more), and the monitor reads it in a snapshot taken on the loop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum


class Refusal(StrEnum):
    """Why a connection was turned away (the ``reason`` label)."""

    TLS_HANDSHAKE = "tls_handshake"
    TLS_ON_PLAIN_PORT = "tls_on_plain_port"
    ACCESS_DENIED = "access_denied"
    MAX_CONNECTIONS = "max_connections"


class Closure(StrEnum):
    """Why the server closed a connection it had accepted (``reason``)."""

    REGISTER_TIMEOUT = "register_timeout"
    SLOW_CLIENT = "slow_client"


class ProtocolFault(StrEnum):
    """What a client got wrong on the wire (the ``kind`` label)."""

    FRAME_TOO_LARGE = "frame_too_large"
    MALFORMED = "malformed"
    UNKNOWN_METHOD = "unknown_method"
    NOT_REGISTERED = "not_registered"
    BAD_ARGUMENTS = "bad_arguments"


@dataclass
class Traffic:
    received_bytes: int = 0
    sent_bytes: int = 0
    blob_uploaded_bytes: int = 0
    blob_downloaded_bytes: int = 0
    refused: Counter[Refusal] = field(default_factory=Counter)
    protocol_errors: Counter[ProtocolFault] = field(default_factory=Counter)
    closed: Counter[Closure] = field(default_factory=Counter)
