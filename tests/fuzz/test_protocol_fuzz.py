"""Fuzz target for the sans-IO protocol core: garbage in, documented errors out.

Every entry point that reads bytes from a peer -- ``FrameDecoder.feed``,
``Codec.decode``, ``ServerConnection.receive_data`` and
``ClientConnection.receive_data`` -- may raise ``RemoteProtocolError`` (or a
subclass) and nothing else, must leave a failed connection CLOSED, and must
never run code named by a pickle.

Under pytest the inputs come from Hypothesis.  With atheris installed, the
same target runs coverage-guided::

    python tests/fuzz/test_protocol_fuzz.py [atheris/libFuzzer options]
"""

from __future__ import annotations

import itertools
import pickle
import sys
from typing import Any

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zodbserver.errors import RemoteProtocolError
from zodbserver.protocol import (
    MSGPACK,
    PICKLE,
    ClientConnection,
    Codec,
    FrameDecoder,
    ServerConnection,
    State,
    encode_frame,
)

SETTINGS = settings(max_examples=150, deadline=None, database=None)
MAX_FRAME_SIZE = 4096

#: Anything the sentinel was asked to do.  Must stay empty.
SIDE_EFFECTS: list[tuple[Any, ...]] = []


def _sentinel(*args: Any) -> None:
    SIDE_EFFECTS.append(args)


class _SentinelClass:
    def __init__(self, *args: Any) -> None:
        SIDE_EFFECTS.append(args)


MODULE = __name__.encode()


def _only_documented_errors(target: str, call: Any, *args: Any) -> bool:
    """Run ``call``; True if it raised RemoteProtocolError, fail on anything
    else escaping or on a side effect."""
    SIDE_EFFECTS.clear()
    try:
        call(*args)
    except RemoteProtocolError:
        return True
    except Exception as exc:
        raise AssertionError(
            f"{target}: undocumented {type(exc).__name__} escaped "
            f"(only RemoteProtocolError may): {str(exc)[:200]}"
        ) from exc
    finally:
        assert not SIDE_EFFECTS, f"{target}: decoding ran code: {SIDE_EFFECTS!r}"
    return False


def fuzz_frame_decoder(data: bytes) -> None:
    decoder = FrameDecoder(max_frame_size=MAX_FRAME_SIZE)
    half = len(data) // 2

    def feed() -> None:
        for frame in decoder.feed(data[:half]) + decoder.feed(data[half:]):
            assert len(frame) <= MAX_FRAME_SIZE

    _only_documented_errors("FrameDecoder.feed", feed)


def fuzz_codec(encoding: bytes, payload: bytes) -> None:
    def decode() -> None:
        _msgid, _flag, name, _args = Codec(encoding).decode(payload)
        assert isinstance(name, str)

    _only_documented_errors(f"Codec({encoding!r}).decode", decode)


def fuzz_connection(
    connection: ServerConnection | ClientConnection, chunks: list[bytes]
) -> None:
    target = f"{type(connection).__name__}.receive_data"

    def feed() -> None:
        for chunk in chunks:
            connection.receive_data(chunk)

    if _only_documented_errors(target, feed):
        assert connection.state is State.CLOSED, f"{target}: not closed after error"
        assert connection.receive_data(b"\x00\x00\x00\x00") == []


# -- input strategies ------------------------------------------------------

#: Pickle opcode fragments: plain data, containers, and every code-running
#: opcode pointed at our sentinel or at something nasty.
PICKLE_FRAGMENTS = [
    b"\x80\x02",
    b"\x80\x03",
    b"\x80\x04",
    b"\x80\x05",
    b"(",
    b")",
    b"]",
    b"}",
    b"t",
    b"\x85",
    b"\x86",
    b"\x87",
    b"a",
    b"e",
    b"s",
    b"u",
    b"0",
    b"2",
    b"N",
    b"\x88",
    b"\x89",
    b"K\x01",
    b"K\x02",
    b"J\xff\xff\xff\xff",
    b"I1\n",
    b"\x8a\x01\x07",
    b"C\x02M5",
    b"X\x06\x00\x00\x00.reply",
    b"X\x04\x00\x00\x00ping",
    b"\x8c\x08builtins",
    b"\x8c\x04eval",
    b"\x8c" + bytes([len(MODULE)]) + MODULE,
    b"\x8c\t_sentinel",
    b"\x93",
    b"c" + MODULE + b"\n_sentinel\n",
    b"c" + MODULE + b"\n_SentinelClass\n",
    b"cbuiltins\neval\n",
    b"cos\nsystem\n",
    b"ccopy_reg\n_reconstructor\n",
    b"i" + MODULE + b"\n_SentinelClass\n",
    b"o",
    b"R",
    b"b",
    b"\x81",
    b"\x92",
    b"\x82\x01",
    b"\x83\x01\x02",
    b"Pfoo\n",
    b"Q",
    b"q\x00",
    b"h\x00",
    b"\x94",
    b"\x97",
    b".",
]

pickle_soup = st.lists(st.sampled_from(PICKLE_FRAGMENTS), max_size=30).map(b"".join)

valid_messages = st.tuples(
    st.integers(min_value=-1, max_value=2**31),
    st.booleans(),
    st.sampled_from([".reply", "register", "loadBefore", "vote"]),
    st.tuples(
        st.binary(max_size=16),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.none(),
    ),
)


@st.composite
def mutated(draw: st.DrawFn, encode: Any) -> bytes:
    data = bytearray(encode(draw(valid_messages)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        if not data:
            break
        position = draw(st.integers(min_value=0, max_value=len(data) - 1))
        action = draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip":
            data[position] = draw(st.integers(min_value=0, max_value=255))
        elif action == "delete":
            del data[position]
        else:
            data.insert(position, draw(st.integers(min_value=0, max_value=255)))
    return bytes(data)


def _pack(message: Any) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def _pickle(message: Any) -> bytes:
    return pickle.dumps(message, 3)


msgpack_payloads = st.binary(max_size=200) | mutated(_pack) | valid_messages.map(_pack)
pickle_payloads = (
    st.binary(max_size=200)
    | mutated(_pickle)
    | pickle_soup
    | valid_messages.map(_pickle)
)


@st.composite
def connection_input(draw: st.DrawFn) -> list[bytes]:
    """A handshake (usually valid), then mostly valid frames with garbage
    mixed in, or raw bytes; the whole stream split at random points."""
    if draw(st.integers(min_value=0, max_value=9)) < 7:
        handshake = draw(st.sampled_from([b"M5", b"Z5"]))
    else:
        handshake = draw(
            st.sampled_from([b"ruok", b"Z6", b"Z4", b"M"]) | st.binary(max_size=6)
        )
    if handshake[:1] == b"M":
        encode, garbage = _pack, msgpack_payloads
    else:
        encode, garbage = _pickle, pickle_payloads
    payloads = []
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        if draw(st.integers(min_value=0, max_value=9)) < 8:
            payloads.append(encode(draw(valid_messages)))
        else:
            payloads.append(draw(garbage))
    stream = encode_frame(handshake) + b"".join(map(encode_frame, payloads))
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        stream += draw(st.binary(max_size=200))
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    points = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(points)]


# -- the pytest face of the fuzz target --------------------------------------


@SETTINGS
@given(data=st.binary(max_size=300))
@example(data=b"\xff\xff\xff\xff")
@example(data=b"\x00\x00\x00\x00" * 3)
def test_frame_decoder_fuzz(data: bytes) -> None:
    fuzz_frame_decoder(data)


@SETTINGS
@given(payload=msgpack_payloads)
def test_msgpack_codec_fuzz(payload: bytes) -> None:
    fuzz_codec(MSGPACK, payload)


@SETTINGS
@given(payload=pickle_payloads)
@example(payload=b"\x80\x03cbuiltins\neval\nX\x01\x00\x00\x001\x85R.")
def test_pickle_codec_fuzz(payload: bytes) -> None:
    fuzz_codec(PICKLE, payload)


@SETTINGS
@given(chunks=connection_input())
def test_server_connection_fuzz(chunks: list[bytes]) -> None:
    fuzz_connection(ServerConnection(max_frame_size=MAX_FRAME_SIZE * 4), chunks)


@SETTINGS
@given(chunks=connection_input())
def test_client_connection_fuzz(chunks: list[bytes]) -> None:
    fuzz_connection(ClientConnection(max_frame_size=MAX_FRAME_SIZE * 4), chunks)


def _deep_list(depth: int) -> bytes:
    return b"]" * depth + b"a" * (depth - 1)


#: Inputs found to break the documented-errors contract (kept as regressions;
#: each one names the target its first byte selects, see ``fuzz_one_input``).
REGRESSIONS = {
    "codec-pickle-huge-int-name": b"\x02" + _pickle((1, False, 10**5000, ())),
    "codec-pickle-deep-list-name": (
        b"\x02\x80\x03(K\x01\x89" + _deep_list(100_000) + b")t."
    ),
    "server-huge-int-name": (
        b"\x03" + encode_frame(b"Z5") + encode_frame(_pickle((1, 0, 10**5000, ())))
    ),
    "client-huge-int-error-class": (
        b"\x04"
        + encode_frame(b"Z5")
        + encode_frame(_pickle((1, 2, ".reply", (10**5000, {}))))
    ),
    "client-deep-malformed-error": (
        b"\x04"
        + encode_frame(b"Z5")
        + encode_frame(
            b"\x80\x03(K\x01K\x02X\x06\x00\x00\x00.reply" + _deep_list(100_000) + b"t."
        )
    ),
    "msgpack-deep-arrays": b"\x01\x94" + b"\x91" * 5000,
}


@pytest.mark.parametrize("data", REGRESSIONS.values(), ids=REGRESSIONS.keys())
def test_fuzz_regressions(data: bytes) -> None:
    fuzz_one_input(data)


def test_fuzz_one_input_runs_every_target_without_atheris() -> None:
    for selector in range(5):
        fuzz_one_input(bytes([selector]) + encode_frame(b"M5") + b"\x00\x00\x00\x01")
    fuzz_one_input(b"")


def test_main_without_atheris_explains_and_returns_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "atheris", None)  # makes the import fail
    assert main([]) == 2
    assert "atheris is not installed" in capsys.readouterr().err


# -- the atheris face of the fuzz target -------------------------------------


def fuzz_one_input(data: bytes) -> None:
    """One libFuzzer input: the first byte picks the target."""
    if not data:
        return
    selector, rest = data[0] % 5, data[1:]
    if selector == 0:
        fuzz_frame_decoder(rest)
    elif selector == 1:
        fuzz_codec(MSGPACK, rest)
    elif selector == 2:
        fuzz_codec(PICKLE, rest)
    elif selector == 3:
        fuzz_connection(ServerConnection(max_frame_size=2**20), [rest])
    else:
        fuzz_connection(ClientConnection(max_frame_size=2**20), [rest])


def main(argv: list[str] | None = None) -> int:
    """Run the target under atheris; returns 2 if atheris is not installed."""
    try:
        import atheris
    except ImportError:
        print(
            "atheris is not installed; `pip install atheris`, or run the "
            "Hypothesis version with pytest",
            file=sys.stderr,
        )
        return 2
    atheris.Setup(list(sys.argv if argv is None else argv), fuzz_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
