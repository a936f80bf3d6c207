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

from ..errors import FrameTooLargeError

#: Large enough for any real ZODB record (ZEO itself has no limit at all).
DEFAULT_MAX_FRAME_SIZE = 256 * 1024 * 1024

_HEADER = 4


def encode_frame(payload: bytes) -> bytes:
    """Return ``payload`` with its 4-byte big-endian length prefix."""
    return len(payload).to_bytes(_HEADER, "big") + payload


class FrameDecoder:
    """Incremental decoder: feed bytes, get complete payloads.

    Each received byte is copied once: a payload inside one chunk is sliced
    out of it, and one spread over several chunks is joined from them when
    its last byte arrives (a blob transfer's 59,000-byte chunks always
    straddle the loop's reads).
    """

    __slots__ = ("_head", "_missing", "_parts", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        #: The start of a length prefix (fewer than four bytes).
        self._head = b""
        #: The received parts of a payload whose length is known.
        self._parts: list[bytes | memoryview] = []
        #: Bytes that payload still lacks (0: none is in progress).
        self._missing = 0
        self.max_frame_size = max_frame_size

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a complete frame."""
        if self._missing:
            return _HEADER + sum(len(part) for part in self._parts)
        return len(self._head)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the payloads completed by them.

        Raises ``FrameTooLargeError`` when a length prefix exceeds the maximum.
        """
        if type(data) is not bytes:
            data = bytes(data)
        if not self._missing and not self._head and len(data) > _HEADER:
            # The usual chunk: one whole frame (a reply, an invalidation).
            size = int.from_bytes(data[:_HEADER], "big")
            if size + _HEADER == len(data) and size <= self.max_frame_size:
                return [data[_HEADER:]]
        frames: list[bytes] = []
        position = 0
        if self._missing:
            if len(data) < self._missing:
                if data:
                    self._parts.append(data)
                    self._missing -= len(data)
                return frames
            position = self._missing
            with memoryview(data) as view:
                self._parts.append(view[:position])
                frames.append(b"".join(self._parts))
            self._parts = []
            self._missing = 0
        elif self._head:
            data = self._head + data
            self._head = b""
        available = len(data)
        limit = self.max_frame_size
        while available - position >= _HEADER:
            start = position + _HEADER
            size = int.from_bytes(data[position:start], "big")
            if size > limit:
                raise FrameTooLargeError(
                    f"frame of {size} bytes announced, the limit is {limit}"
                )
            position = start + size
            if position > available:
                if start < available:
                    self._parts.append(memoryview(data)[start:])
                self._missing = position - available
                return frames
            frames.append(data[start:position])
        self._head = data[position:]
        return frames
