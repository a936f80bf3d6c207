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
        if type(data) is not bytes:
            data = bytes(data)
        if not buffer:
            # The common case: the chunk starts with a frame.  Slice the
            # payloads straight out of it and keep only an incomplete tail.
            frames, position = self._split(data)
            if position < len(data):
                buffer += data[position:] if position else data
            return frames
        buffer += data
        with memoryview(buffer) as view:
            frames, position = self._split(view)
        if position:
            del buffer[:position]
        return frames

    def _split(self, source: bytes | memoryview) -> tuple[list[bytes], int]:
        """The whole frames at the start of ``source``, and where they end."""
        available = len(source)
        limit = self.max_frame_size
        frames: list[bytes] = []
        position = 0
        while available - position >= _HEADER:
            start = position + _HEADER
            size = int.from_bytes(source[position:start], "big")
            if size > limit:
                raise FrameTooLarge(
                    f"frame of {size} bytes announced, the limit is {limit}"
                )
            position = start + size
            if position > available:
                return frames, start - _HEADER
            payload = source[start:position]
            frames.append(payload if type(payload) is bytes else bytes(payload))
        return frames, position
