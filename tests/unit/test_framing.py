"""Tests for the 4-byte length-prefixed framing (``protocol.framing``)."""

from __future__ import annotations

import pytest

from zodbserver.errors import FrameTooLargeError, RemoteProtocolError
from zodbserver.protocol import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame


def test_encode_frame_prefixes_big_endian_length() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"x" * 258) == b"\x00\x00\x01\x02" + b"x" * 258


def test_encode_frame_of_empty_payload_is_just_the_header() -> None:
    assert encode_frame(b"") == b"\x00\x00\x00\x00"


@pytest.mark.parametrize("payload", [b"", b"M5", b"\x00" * 7, bytes(range(256)) * 3])
def test_round_trip_one_frame(payload: bytes) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(payload)) == [payload]
    assert decoder.pending == 0


def test_several_frames_in_one_chunk_come_out_in_order() -> None:
    payloads = [b"first", b"", b"third", b"\xff" * 100]
    stream = b"".join(encode_frame(p) for p in payloads)
    assert FrameDecoder().feed(stream) == payloads


def test_one_byte_at_a_time_gives_the_same_frames_as_whole() -> None:
    payloads = [b"Z5", b"hello", b"", b"world" * 50]
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder()
    frames: list[bytes] = []
    for index in range(len(stream)):
        frames += decoder.feed(stream[index : index + 1])
    assert frames == FrameDecoder().feed(stream) == payloads
    assert decoder.pending == 0


def test_header_split_across_chunks() -> None:
    decoder = FrameDecoder()
    frame = encode_frame(b"payload")
    assert decoder.feed(frame[:1]) == []
    assert decoder.feed(frame[1:3]) == []
    assert decoder.feed(frame[3:5]) == []
    assert decoder.feed(frame[5:]) == [b"payload"]


def test_truncated_frame_stays_pending() -> None:
    decoder = FrameDecoder()
    frame = encode_frame(b"0123456789")
    assert decoder.feed(frame[:-1]) == []
    assert decoder.pending == len(frame) - 1
    assert decoder.feed(b"") == []
    assert decoder.pending == len(frame) - 1
    assert decoder.feed(frame[-1:]) == [b"0123456789"]
    assert decoder.pending == 0


def test_complete_frame_followed_by_partial_one() -> None:
    decoder = FrameDecoder()
    second = encode_frame(b"second")
    assert decoder.feed(encode_frame(b"first") + second[:6]) == [b"first"]
    assert decoder.pending == 6
    assert decoder.feed(second[6:]) == [b"second"]


def test_zero_length_frames() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"\x00\x00\x00\x00" * 3) == [b"", b"", b""]
    assert decoder.feed(b"\x00\x00") == []
    assert decoder.feed(b"\x00\x00") == [b""]
    assert decoder.pending == 0


def test_empty_feed_returns_nothing() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"") == []
    assert decoder.pending == 0


def test_oversized_length_is_refused_as_soon_as_the_header_arrives() -> None:
    decoder = FrameDecoder(max_frame_size=10)
    header = (11).to_bytes(4, "big")
    assert decoder.feed(header[:3]) == []
    with pytest.raises(FrameTooLargeError, match="11"):
        decoder.feed(header[3:])
    # Nothing but the header was ever buffered: no body was waited for.
    assert decoder.pending <= 4


def test_oversized_length_refused_without_any_body_bytes() -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameTooLargeError):
        decoder.feed(b"\xff\xff\xff\xff")


def test_oversized_second_frame_is_refused_after_the_first_completes() -> None:
    decoder = FrameDecoder(max_frame_size=10)
    with pytest.raises(FrameTooLargeError):
        decoder.feed(encode_frame(b"ok") + (1000).to_bytes(4, "big"))


def test_frame_of_exactly_the_maximum_is_allowed() -> None:
    decoder = FrameDecoder(max_frame_size=10)
    assert decoder.feed((10).to_bytes(4, "big")) == []
    assert decoder.feed(b"x" * 10) == [b"x" * 10]


def test_zero_maximum_still_allows_empty_frames() -> None:
    decoder = FrameDecoder(max_frame_size=0)
    assert decoder.feed(b"\x00\x00\x00\x00") == [b""]
    with pytest.raises(FrameTooLargeError):
        decoder.feed(b"\x00\x00\x00\x01")


def test_frame_too_large_is_a_remote_protocol_error() -> None:
    assert issubclass(FrameTooLargeError, RemoteProtocolError)


def test_default_maximum_is_generous_but_bounded() -> None:
    assert FrameDecoder().max_frame_size == DEFAULT_MAX_FRAME_SIZE
    assert 16 * 1024 * 1024 <= DEFAULT_MAX_FRAME_SIZE < 2**32 - 1


def test_a_chunk_that_looks_like_one_frame_continues_the_pending_one() -> None:
    """One whole frame per chunk is the usual case; a chunk that would be a
    whole frame by itself, while an earlier frame is incomplete, is the
    rest of that frame."""
    inner = encode_frame(b"zz")  # a frame's payload that is a frame itself
    outer = encode_frame(inner)
    decoder = FrameDecoder()
    assert decoder.feed(outer[:4]) == []
    assert decoder.feed(outer[4:]) == [inner]
    assert decoder.feed(inner) == [b"zz"]
    assert decoder.feed(encode_frame(b"")) == [b""]
    assert decoder.pending == 0


def test_an_oversized_frame_in_one_whole_chunk_is_refused() -> None:
    decoder = FrameDecoder(max_frame_size=10)
    with pytest.raises(FrameTooLargeError):
        decoder.feed(encode_frame(b"x" * 11))
