"""Hypothesis properties of the sans-IO protocol core.

* Framing and both connection ends give the same frames/events however the
  byte stream is chunked: whole, one byte at a time, or split at random.
* Both codecs round-trip plain data exactly (types included); msgpack turns
  arrays into tuples.
* Version negotiation follows ZEO's bytewise ``min(announced, b"5")``.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zodbserver.errors import FrameTooLargeError, RemoteProtocolError
from zodbserver.protocol import (
    MSGPACK,
    PICKLE,
    AsyncCall,
    Call,
    ClientConnection,
    Codec,
    ErrorReply,
    Event,
    FrameDecoder,
    Handshake,
    Heartbeat,
    Reply,
    ServerConnection,
    encode_frame,
    negotiate_version,
)

SETTINGS = settings(max_examples=75, deadline=None, database=None)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.binary(max_size=32)
    | st.text(max_size=16)
)

#: What ZEO messages carry: no lists (msgpack would make them tuples).
plain_data = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)

#: The same, with lists as well.
data_with_lists = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)

msgids = st.integers(min_value=1, max_value=2**31) | st.tuples(
    st.binary(min_size=8, max_size=8), st.binary(min_size=8, max_size=8)
)
method_names = st.text(min_size=1, max_size=20).filter(lambda name: name != ".reply")
arguments = st.lists(plain_data, max_size=4).map(tuple)

encodings = st.sampled_from([MSGPACK, PICKLE])


def same(left: Any, right: Any) -> bool:
    """Equality that also insists on equal types (so True is not 1)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, tuple | list):
        return len(left) == len(right) and all(map(same, left, right))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(
            same(value, right[key]) for key, value in left.items()
        )
    return bool(left == right)


def without_lists(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(without_lists(item) for item in value)
    if isinstance(value, dict):
        return {key: without_lists(item) for key, item in value.items()}
    return value


def chunked(data: st.DataObject, stream: bytes) -> list[bytes]:
    cuts = data.draw(
        st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=12),
        label="cuts",
    )
    points = [0, *sorted(cuts), len(stream)]
    return [stream[start:end] for start, end in itertools.pairwise(points)]


def one_byte_at_a_time(stream: bytes) -> list[bytes]:
    return [stream[index : index + 1] for index in range(len(stream))]


# -- codec ------------------------------------------------------------------


@SETTINGS
@given(
    encoding=encodings,
    msgid=msgids,
    flag=st.booleans(),
    name=st.text(max_size=20),
    args=plain_data,
)
def test_codec_round_trips_plain_data_exactly(
    encoding: bytes, msgid: Any, flag: bool, name: str, args: Any
) -> None:
    codec = Codec(encoding)
    message = (msgid, flag, name, args)
    decoded = codec.decode(codec.encode(message))
    assert same(decoded, message), (decoded, message)


@SETTINGS
@given(args=data_with_lists)
def test_msgpack_decodes_every_array_as_a_tuple(args: Any) -> None:
    codec = Codec(MSGPACK)
    decoded = codec.decode(codec.encode((1, False, "m", args)))
    assert same(decoded, (1, False, "m", without_lists(args)))


@SETTINGS
@given(args=data_with_lists)
def test_pickle_keeps_lists_and_tuples_apart(args: Any) -> None:
    codec = Codec(PICKLE)
    decoded = codec.decode(codec.encode((1, False, "m", args)))
    assert same(decoded, (1, False, "m", args))


# -- framing ----------------------------------------------------------------


@SETTINGS
@given(payloads=st.lists(st.binary(max_size=300), max_size=8), data=st.data())
def test_framing_is_independent_of_chunking(
    payloads: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(payload) for payload in payloads)
    assert FrameDecoder().feed(stream) == payloads
    for chunks in (one_byte_at_a_time(stream), chunked(data, stream)):
        decoder = FrameDecoder()
        frames: list[bytes] = []
        for chunk in chunks:
            frames += decoder.feed(chunk)
        assert frames == payloads
        assert decoder.pending == 0


@SETTINGS
@given(
    payloads=st.lists(st.binary(max_size=50), min_size=1, max_size=5), data=st.data()
)
def test_framing_keeps_a_truncated_tail_pending(
    payloads: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(payload) for payload in payloads)
    cut = data.draw(st.integers(min_value=0, max_value=len(stream) - 1), label="cut")
    decoder = FrameDecoder()
    frames = decoder.feed(stream[:cut])
    assert frames == payloads[: len(frames)]
    assert len(frames) < len(payloads)
    assert decoder.pending == cut - sum(len(encode_frame(f)) for f in frames)
    assert frames + decoder.feed(stream[cut:]) == payloads


@SETTINGS
@given(
    limit=st.integers(min_value=0, max_value=10_000),
    excess=st.integers(min_value=1, max_value=2**32 - 10_001),
    split=st.integers(min_value=0, max_value=3),
    prefix=st.lists(st.binary(max_size=20), max_size=3),
)
def test_oversized_frame_is_refused_on_the_last_header_byte(
    limit: int, excess: int, split: int, prefix: list[bytes]
) -> None:
    decoder = FrameDecoder(max_frame_size=max(limit, 20))
    header = (max(limit, 20) + excess).to_bytes(4, "big")
    before = b"".join(encode_frame(payload) for payload in prefix)
    assert decoder.feed(before + header[:split]) == prefix
    for index in range(split, 3):
        assert decoder.feed(header[index : index + 1]) == []
    with pytest.raises(FrameTooLargeError):
        decoder.feed(header[3:])


# -- connections -------------------------------------------------------------

client_messages = st.one_of(
    st.tuples(msgids, st.just(False), method_names, arguments),
    st.tuples(st.just(0), st.just(True), method_names, arguments),
    st.just((-1, 0, ".reply", None)),
)


def server_expects(message: tuple[Any, Any, str, Any]) -> Event:
    msgid, flag, name, args = message
    if msgid == -1:
        return Heartbeat()
    if flag:
        return AsyncCall(name, args)
    return Call(msgid, name, args)


def feed_all(
    connection: ServerConnection | ClientConnection, chunks: list[bytes]
) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events += connection.receive_data(chunk)
    return events


@SETTINGS
@given(
    protocol=st.sampled_from([b"M5", b"Z5"]),
    messages=st.lists(client_messages, max_size=6),
    data=st.data(),
)
def test_server_events_are_independent_of_chunking(
    protocol: bytes, messages: list[tuple[Any, Any, str, Any]], data: st.DataObject
) -> None:
    codec = Codec(protocol[:1])
    stream = encode_frame(protocol) + b"".join(
        encode_frame(codec.encode(message)) for message in messages
    )
    expected = [Handshake(protocol), *map(server_expects, messages)]
    assert ServerConnection().receive_data(stream) == expected
    assert feed_all(ServerConnection(), one_byte_at_a_time(stream)) == expected
    assert feed_all(ServerConnection(), chunked(data, stream)) == expected


server_messages = st.one_of(
    st.tuples(msgids, st.just(0), st.just(".reply"), plain_data),
    st.tuples(
        msgids,
        st.just(2),
        st.just(".reply"),
        st.tuples(st.text(max_size=30), plain_data),
    ),
    st.tuples(st.just(0), st.just(True), method_names, arguments),
)


def client_expects(message: tuple[Any, Any, str, Any]) -> Event:
    msgid, flag, name, args = message
    if name != ".reply":
        return AsyncCall(name, args)
    if flag:
        return ErrorReply(msgid, *args)
    return Reply(msgid, args)


@SETTINGS
@given(
    protocol=st.sampled_from([b"M5", b"Z5"]),
    messages=st.lists(server_messages, max_size=6),
    data=st.data(),
)
def test_client_events_are_independent_of_chunking(
    protocol: bytes, messages: list[tuple[Any, Any, str, Any]], data: st.DataObject
) -> None:
    codec = Codec(protocol[:1])
    stream = encode_frame(protocol) + b"".join(
        encode_frame(codec.encode(message)) for message in messages
    )
    expected = [Handshake(protocol), *map(client_expects, messages)]
    assert ClientConnection().receive_data(stream) == expected
    assert feed_all(ClientConnection(), one_byte_at_a_time(stream)) == expected
    assert feed_all(ClientConnection(), chunked(data, stream)) == expected


@SETTINGS
@given(
    protocol=st.sampled_from([b"M5", b"Z5"]),
    results=st.lists(plain_data, max_size=4),
)
def test_server_reply_reaches_the_client_unchanged(
    protocol: bytes, results: list[Any]
) -> None:
    server = ServerConnection(announce=protocol)
    client = ClientConnection()
    client.receive_data(server.greeting())
    server.receive_data(client.handshake())
    for index, result in enumerate(results, start=1):
        msgid = (b"o" * 8, index.to_bytes(8, "big")) if index % 2 else index
        (event,) = client.receive_data(server.reply(msgid, result))
        assert isinstance(event, Reply)
        assert same(event.msgid, msgid)
        assert same(event.result, result)


@SETTINGS
@given(letter=st.sampled_from([b"M", b"Z"]), version=st.binary(max_size=6))
def test_version_negotiation_is_bytewise(letter: bytes, version: bytes) -> None:
    client = ClientConnection()
    if version >= b"5":
        assert negotiate_version(letter + version) == b"5"
        client.receive_data(encode_frame(letter + version))
        assert client.handshake() == encode_frame(letter + b"5")
    else:
        with pytest.raises(RemoteProtocolError):
            negotiate_version(letter + version)
        with pytest.raises(RemoteProtocolError):
            client.receive_data(encode_frame(letter + version))


@SETTINGS
@given(version=st.binary(max_size=6), letter=st.binary(min_size=1, max_size=1))
def test_server_accepts_exactly_m5_and_z5(letter: bytes, version: bytes) -> None:
    handshake = letter + version
    server = ServerConnection()
    if handshake in (b"M5", b"Z5"):
        assert server.receive_data(encode_frame(handshake)) == [Handshake(handshake)]
    else:
        with pytest.raises(RemoteProtocolError):
            server.receive_data(encode_frame(handshake))


#: Sizes on both sides of every msgpack bin header boundary, and random ones.
data_sizes = st.sampled_from([0, 1, 255, 256, 65535, 65536, 59000]) | st.integers(
    0, 200_000
)


@SETTINGS
@given(
    encoding=encodings,
    method=method_names,
    args=arguments,
    size=data_sizes,
    buffer_type=st.sampled_from([bytes, bytearray]),
)
def test_call_async_parts_join_to_exactly_call_async(
    encoding: bytes,
    method: str,
    args: tuple[Any, ...],
    size: int,
    buffer_type: type[bytes] | type[bytearray],
) -> None:
    """A blob chunk sent in pieces (bytes, or a buffer read straight from
    the page cache) is byte for byte the call it stands for, and decodes
    on the other end to the same event, with bytes."""
    server = ServerConnection(encoding + b"5")
    client = ClientConnection()
    client.receive_data(server.greeting())
    server.receive_data(client.handshake())
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    chunk = buffer_type(data)
    parts = server.call_async_parts(method, args, chunk)
    joined = b"".join(parts)
    assert joined == server.call_async(method, (*args, data))
    if encoding == MSGPACK:
        assert parts[-1] is chunk  # sent as it is, not copied
    (event,) = client.receive_data(joined)
    assert isinstance(event, AsyncCall)
    assert event.method == method
    assert event.args[-1] == data
    assert type(event.args[-1]) is bytes
