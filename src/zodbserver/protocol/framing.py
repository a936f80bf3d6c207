"""Length-prefixed framing of ZEO messages.

On the wire every message, in both directions, is::

    +----------------------+------------------------+
    | length: 4 bytes, BE  | payload: length bytes  |
    +----------------------+------------------------+

``FrameDecoder`` turns an arbitrary sequence of received byte chunks into
whole payloads.  It refuses a frame whose announced length exceeds
``max_frame_size`` as soon as the 4-byte prefix is seen, so a hostile peer
cannot make us buffer gigabytes before we notice.
"""

from __future__ import annotations

from ..errors import FrameTooLarge

#: Large enough for any real ZODB record (ZEO itself has no limit at all).
DEFAULT_MAX_FRAME_SIZE = 256 * 1024 * 1024

_HEADER = 4


def encode_frame(payload: bytes) -> bytes:
    """Return ``payload`` with its 4-byte big-endian length prefix."""
    return len(payload).to_bytes(_HEADER, "big") + payload


class FrameDecoder:
    """Incremental decoder: feed bytes, get complete payloads."""

    __slots__ = ("_buffer", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._buffer = bytearray()
        self.max_frame_size = max_frame_size

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the payloads completed by them.

        Raises ``FrameTooLarge`` when a length prefix exceeds the maximum.
        """
        buffer = self._buffer
        buffer += data
        available = len(buffer)
        frames: list[bytes] = []
        position = 0
        while available - position >= _HEADER:
            size = int.from_bytes(buffer[position : position + _HEADER], "big")
            if size > self.max_frame_size:
                raise FrameTooLarge(
                    f"frame of {size} bytes announced, "
                    f"the limit is {self.max_frame_size}"
                )
            end = position + _HEADER + size
            if end > available:
                break
            frames.append(bytes(buffer[position + _HEADER : end]))
            position = end
        if position:
            del buffer[:position]
        return frames
