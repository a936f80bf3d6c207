"""The ZEO 5 wire protocol, sans I/O: bytes in, events out."""

from .codec import MSGPACK, PICKLE, Codec, exception_payload
from .connection import (
    PROTOCOL_VERSION,
    STATUS_PROBE,
    ClientConnection,
    ServerConnection,
    State,
    negotiate_version,
)
from .framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame
from .messages import (
    AsyncCall,
    Call,
    ErrorReply,
    Event,
    Handshake,
    Heartbeat,
    Reply,
    StatusProbe,
)

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "MSGPACK",
    "PICKLE",
    "PROTOCOL_VERSION",
    "STATUS_PROBE",
    "AsyncCall",
    "Call",
    "ClientConnection",
    "Codec",
    "ErrorReply",
    "Event",
    "FrameDecoder",
    "Handshake",
    "Heartbeat",
    "Reply",
    "ServerConnection",
    "State",
    "StatusProbe",
    "encode_frame",
    "exception_payload",
    "negotiate_version",
]
