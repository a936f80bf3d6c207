"""Tests for the message codec (``protocol.codec``): msgpack ``M`` and pickle ``Z``.

The pickle tests craft hostile pickles by hand, opcode by opcode, and prove
with a module-level side-effect sentinel that decoding never runs anything.
Each hostile pickle is first shown to be a *valid* pickle (and, where it only
touches the sentinel, to really run under the standard unpickler), so a
refusal cannot be an accident of a malformed test input.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import pickletools
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from ZODB.POSException import ConflictError, POSKeyError, ReadOnlyError

from zodbserver.errors import LocalProtocolError, RemoteProtocolError
from zodbserver.protocol import MSGPACK, PICKLE, Codec, exception_payload

MODULE = __name__
OID = b"\x00\x00\x00\x00\x00\x00\x00\x07"
TID1 = b"\x03\xe1\x9a\x00\x00\x00\x00\x01"
TID2 = b"\x03\xe1\x9a\x00\x00\x00\x00\x02"

#: Everything the sentinel callables were asked to do.  Must stay empty.
SIDE_EFFECTS: list[tuple[Any, ...]] = []


def _record(*args: Any) -> str:
    SIDE_EFFECTS.append(("call", *args))
    return "ran"


def _ext1_target(*args: Any) -> str:
    return _record("ext1", *args)


def _ext2_target(*args: Any) -> str:
    return _record("ext2", *args)


def _ext4_target(*args: Any) -> str:
    return _record("ext4", *args)


class _Sentinel:
    """A class whose every construction path leaves a trace."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Sentinel:
        SIDE_EFFECTS.append(("new", *args))
        return object.__new__(cls)

    def __init__(self, *args: Any) -> None:
        SIDE_EFFECTS.append(("init", *args))

    def __setstate__(self, state: Any) -> None:
        SIDE_EFFECTS.append(("setstate", state))


@pytest.fixture(autouse=True)
def _clean_side_effects() -> Iterator[None]:
    SIDE_EFFECTS.clear()
    yield
    SIDE_EFFECTS.clear()


# -- a tiny pickle assembler ------------------------------------------------


def _header(protocol: int) -> bytes:
    return b"" if protocol < 2 else b"\x80" + bytes([protocol])


def _text(text: str, protocol: int) -> bytes:
    """Push a str: UNICODE for protocol 0, BINUNICODE after."""
    if protocol == 0:
        assert "\n" not in text
        assert "\\" not in text
        return b"V" + text.encode("raw_unicode_escape") + b"\n"
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def _global(module: str, name: str, protocol: int) -> bytes:
    """Push a global: GLOBAL before protocol 4, STACK_GLOBAL from 4 on."""
    if protocol >= 4:
        return _text(module, 1) + _text(name, 1) + b"\x93"
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _reduce(callable_ops: bytes, argument: str, protocol: int) -> bytes:
    """``callable(argument)`` via MARK ... TUPLE REDUCE."""
    return callable_ops + b"(" + _text(argument, protocol) + b"tR"


def _eval_expression() -> str:
    return f"__import__({MODULE!r})._record('eval')"


def _message(object_ops: bytes, protocol: int) -> bytes:
    """A well-shaped ``(1, False, 'register', <object>)`` around the payload."""
    return (
        _header(protocol)
        + b"(I1\nI00\n"
        + _text("register", protocol)
        + object_ops
        + b"t."
    )


def _bare(object_ops: bytes, protocol: int) -> bytes:
    return _header(protocol) + object_ops + b"."


# Each builder takes (protocol, marker path) and returns the object's opcodes.
Builder = Callable[[int, Path], bytes]

#: (id, protocols, builder, runs_only_the_sentinel)
HOSTILE: list[tuple[str, tuple[int, ...], Builder, bool]] = [
    (
        "builtins.eval",
        (0, 1, 2, 3, 4, 5),
        lambda p, m: _reduce(_global("builtins", "eval", p), _eval_expression(), p),
        True,
    ),
    (
        "builtins.exec",
        (0, 2, 3, 4),
        lambda p, m: _reduce(_global("builtins", "exec", p), _eval_expression(), p),
        True,
    ),
    (
        "os.system",
        (0, 1, 2, 3, 4, 5),
        lambda p, m: _reduce(_global("os", "system", p), f"touch {m}", p),
        False,
    ),
    (
        "sentinel-reduce",
        (0, 1, 2, 3, 4, 5),
        lambda p, m: _reduce(_global(MODULE, "_record", p), "reduce", p),
        True,
    ),
    (
        # ZEO's own server whitelist admits copy_reg: this is how it bites.
        "copy_reg._reconstructor",
        (0, 2),
        lambda p, m: (
            _global("copy_reg", "_reconstructor", p)
            + b"("
            + _global(MODULE, "_Sentinel", p)
            + _global(MODULE, "_Sentinel", p)
            + _text("state", p)
            + b"tR"
        ),
        True,
    ),
    (
        "INST",
        (0,),
        lambda p, m: (
            b"(" + _text("inst", p) + b"i" + MODULE.encode() + b"\n_Sentinel\n"
        ),
        True,
    ),
    (
        "OBJ",
        (1,),
        lambda p, m: b"(" + _global(MODULE, "_Sentinel", p) + _text("obj", p) + b"o",
        True,
    ),
    (
        "NEWOBJ",
        (2, 3),
        lambda p, m: _global(MODULE, "_Sentinel", p) + b"(" + _text("x", p) + b"t\x81",
        True,
    ),
    (
        "NEWOBJ_EX",
        (4, 5),
        lambda p, m: _global(MODULE, "_Sentinel", p) + b")}\x92",
        True,
    ),
    (
        "BUILD",
        (2, 3),
        lambda p, m: _global(MODULE, "_Sentinel", p) + b")\x81}b",
        True,
    ),
]


def _hostile_cases() -> list[Any]:
    cases = []
    for name, protocols, builder, runnable in HOSTILE:
        for protocol in protocols:
            for shape in ("bare", "message"):
                cases.append(
                    pytest.param(
                        builder,
                        protocol,
                        shape,
                        runnable,
                        id=f"{name}-p{protocol}-{shape}",
                    )
                )
    return cases


def _assemble(builder: Builder, protocol: int, shape: str, marker: Path) -> bytes:
    ops = builder(protocol, marker)
    return _message(ops, protocol) if shape == "message" else _bare(ops, protocol)


def _assert_valid_pickle(data: bytes) -> None:
    pickletools.dis(data, out=io.StringIO())


@pytest.mark.parametrize(("builder", "protocol", "shape", "runnable"), _hostile_cases())
def test_hostile_pickle_is_refused_and_nothing_runs(
    builder: Builder, protocol: int, shape: str, runnable: bool, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    data = _assemble(builder, protocol, shape, marker)
    _assert_valid_pickle(data)
    if runnable:
        # Control: the standard unpickler really does run it.
        pickle.loads(data)
        assert SIDE_EFFECTS, "test pickle does not reach the sentinel"
        SIDE_EFFECTS.clear()

    with pytest.raises(RemoteProtocolError) as caught:
        Codec(PICKLE).decode(data)

    assert caught.value.__cause__ is not None, "the cause should be chained"
    assert SIDE_EFFECTS == [], "decoding ran code"
    assert not marker.exists(), "decoding ran os.system"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"Pfoo\n.", id="PERSID-p0"),
        pytest.param(b"(I1\nI00\nVregister\nPfoo\nt.", id="PERSID-p0-message"),
        pytest.param(b"\x80\x01X\x03\x00\x00\x00fooQ.", id="BINPERSID-p1"),
        pytest.param(b"\x80\x03X\x03\x00\x00\x00fooQ.", id="BINPERSID-p3"),
        pytest.param(b"\x80\x05\x97.", id="NEXT_BUFFER-p5"),
        pytest.param(b"\x80\x05\x97\x98.", id="READONLY_BUFFER-p5"),
    ],
)
def test_persistent_ids_and_out_of_band_buffers_are_refused(data: bytes) -> None:
    _assert_valid_pickle(data)
    with pytest.raises(RemoteProtocolError):
        Codec(PICKLE).decode(data)


class _RecordingUnpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        return _record("persistent_load", pid)


def test_persistent_id_pickle_is_valid_for_a_permissive_unpickler() -> None:
    """Control for the test above: the same bytes load when pids are allowed."""
    _RecordingUnpickler(io.BytesIO(b"Pfoo\n.")).load()
    assert SIDE_EFFECTS == [("call", "persistent_load", "foo")]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x80\x02]}b.", id="BUILD-on-list"),
        pytest.param(b"\x80\x02])R.", id="REDUCE-on-list"),
        pytest.param(b"\x80\x02\x82\x00.", id="EXT1-code-0"),
        pytest.param(b"\x80\x02\x82\xfe.", id="EXT1-unregistered"),
        pytest.param(b"\x80\x06N.", id="protocol-6"),
    ],
)
def test_global_free_tricks_are_refused(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        Codec(PICKLE).decode(data)


# -- copyreg extension codes ------------------------------------------------

EXTENSIONS = {
    "EXT1": ("_ext1_target", 0xF3, b"\x82" + (0xF3).to_bytes(1, "little")),
    "EXT2": ("_ext2_target", 0xF3F3, b"\x83" + (0xF3F3).to_bytes(2, "little")),
    "EXT4": ("_ext4_target", 0x7F3F3F3, b"\x84" + (0x7F3F3F3).to_bytes(4, "little")),
}


@pytest.fixture
def registered_extensions() -> Iterator[None]:
    for name, code, _ in EXTENSIONS.values():
        copyreg.add_extension(MODULE, name, code)
    try:
        yield
    finally:
        for name, code, _ in EXTENSIONS.values():
            copyreg.remove_extension(MODULE, name, code)


def _extension_pickle(opcode: bytes, shape: str) -> bytes:
    ops = opcode + b"(" + _text("ext", 2) + b"tR"
    return _message(ops, 2) if shape == "message" else _bare(ops, 2)


@pytest.mark.usefixtures("registered_extensions")
@pytest.mark.parametrize("shape", ["bare", "message"])
@pytest.mark.parametrize("kind", sorted(EXTENSIONS))
def test_extension_code_is_refused(kind: str, shape: str) -> None:
    data = _extension_pickle(EXTENSIONS[kind][2], shape)
    _assert_valid_pickle(data)
    with pytest.raises(RemoteProtocolError):
        Codec(PICKLE).decode(data)
    assert SIDE_EFFECTS == []


@pytest.mark.usefixtures("registered_extensions")
@pytest.mark.parametrize("shape", ["bare", "message"])
@pytest.mark.parametrize("kind", sorted(EXTENSIONS))
def test_extension_code_is_refused_even_when_the_copyreg_cache_is_warm(
    kind: str, shape: str
) -> None:
    """Once *any* unpickler in the process resolved an extension code, the
    standard unpickler serves it from ``copyreg._extension_cache`` without
    asking ``find_class``.  Our decoder must still refuse it."""
    data = _extension_pickle(EXTENSIONS[kind][2], shape)
    pickle.loads(data)  # warms copyreg._extension_cache, runs the sentinel
    assert SIDE_EFFECTS, "control: the extension code did not resolve"
    SIDE_EFFECTS.clear()

    raised: BaseException | None = None
    try:
        Codec(PICKLE).decode(data)
    except RemoteProtocolError as exc:
        raised = exc
    assert SIDE_EFFECTS == [], (
        "BUG (src/zodbserver/protocol/codec.py, _PlainDataUnpickler): "
        f"{kind} with a cached copyreg extension bypasses find_class, so "
        f"decoding CALLED {MODULE}.{EXTENSIONS[kind][0]}: {SIDE_EFFECTS!r}"
    )
    assert raised is not None, f"{kind} pickle was accepted"


# -- round trips and shape checks -------------------------------------------

PLAIN_MESSAGES = [
    (1, False, "register", ("1", False)),
    ((OID, TID1), False, "loadBefore", (OID, TID1)),
    (0, True, "tpc_begin", (12345, b"user", b"desc", {"k": "v"}, None, " ")),
    (7, 0, ".reply", (b"data", TID1, None)),
    (-1, 0, ".reply", None),
    (3, 2, ".reply", ("builtins.KeyError", ("x",))),
    (4, 0, ".reply", {"length": 0, "size": 0, "name": "1", "nested": {"a": (1.5,)}}),
    (5, 0, ".reply", (2**63 - 1, -(2**63), 0.0, -1.25, "é€😀", b"\x00\xff")),
]


@pytest.mark.parametrize("encoding", [MSGPACK, PICKLE])
@pytest.mark.parametrize("message", PLAIN_MESSAGES)
def test_round_trip(encoding: bytes, message: tuple[Any, Any, str, Any]) -> None:
    codec = Codec(encoding)
    assert codec.decode(codec.encode(message)) == message


def test_msgpack_arrays_decode_as_tuples() -> None:
    codec = Codec(MSGPACK)
    decoded = codec.decode(codec.encode((1, False, "m", [1, [2, [3]], {"k": [4]}])))
    assert decoded == (1, False, "m", (1, (2, (3,)), {"k": (4,)}))
    assert type(decoded[3]) is tuple
    assert type(decoded[3][1]) is tuple
    assert type(decoded[3][2]["k"]) is tuple


def test_msgpack_keeps_bytes_and_str_apart() -> None:
    codec = Codec(MSGPACK)
    _, _, _, args = codec.decode(codec.encode((1, False, "m", (b"abc", "abc"))))
    assert type(args[0]) is bytes
    assert type(args[1]) is str


def test_msgpack_encoding_matches_packb_with_bin_type() -> None:
    message = (1, False, "loadBefore", (OID, TID1))
    assert Codec(MSGPACK).encode(message) == msgpack.packb(message, use_bin_type=True)


def test_pickle_encoding_is_protocol_3() -> None:
    data = Codec(PICKLE).encode((1, False, "ping", ()))
    assert data[:2] == b"\x80\x03"
    assert pickle.loads(data) == (1, False, "ping", ())


def test_msgpack_encodes_exceptions_as_name_and_payload() -> None:
    codec = Codec(MSGPACK)
    _, _, _, args = codec.decode(codec.encode((1, 2, ".reply", POSKeyError(OID))))
    assert args == ("ZODB.POSException.POSKeyError", (OID,))


def test_msgpack_encodes_sets_as_tuples() -> None:
    codec = Codec(MSGPACK)
    assert codec.decode(codec.encode((1, 0, ".reply", {b"x"}))) == (
        1,
        0,
        ".reply",
        (b"x",),
    )


@pytest.mark.parametrize("encoding", [MSGPACK, PICKLE])
@pytest.mark.parametrize("value", [{b"x", b"y"}, frozenset({1}), bytearray(b"ab")])
def test_whatever_we_encode_we_can_decode(encoding: bytes, value: Any) -> None:
    """``encode`` must not emit bytes that our own (and ZEO's) decoder refuses.

    docs/protocol.md, The two encodings: a server sends None, bool, int, float, bytes,
    str, tuple, list and dict.  Pickling a set or bytearray at protocol 3
    names the global ``builtins.set``/``bytearray``, which both our decoder
    and ZEO's client unpickler refuse.
    """
    codec = Codec(encoding)
    try:
        data = codec.encode((1, 0, ".reply", value))
    except LocalProtocolError:
        return  # refusing to encode is fine: the server sends an error reply
    try:
        codec.decode(data)
    except RemoteProtocolError as exc:
        pytest.fail(
            "BUG (src/zodbserver/protocol/codec.py, Codec.encode): "
            f"{encoding!r} encodes {type(value).__name__} into bytes that "
            f"Codec.decode refuses ({exc}); msgpack turns it into a tuple/bytes"
        )


@pytest.mark.parametrize("encoding", [MSGPACK, PICKLE])
def test_unencodable_message_raises_local_protocol_error(encoding: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        Codec(encoding).encode((1, 0, ".reply", lambda: None))


def test_msgpack_packer_is_clean_after_a_failed_encode() -> None:
    codec = Codec(MSGPACK)
    with pytest.raises(LocalProtocolError):
        codec.encode((1, 0, ".reply", (b"partial", object())))
    message = (2, 0, ".reply", b"whole")
    assert codec.encode(message) == msgpack.packb(message, use_bin_type=True)


def test_unknown_encoding_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        Codec(b"X")


def _encode_raw(encoding: bytes, obj: Any) -> bytes:
    if encoding == MSGPACK:
        return msgpack.packb(obj, use_bin_type=True)
    return pickle.dumps(obj, 3)


@pytest.mark.parametrize("encoding", [MSGPACK, PICKLE])
@pytest.mark.parametrize(
    "obj",
    [
        None,
        42,
        "register",
        b"M5",
        {"msgid": 1},
        (),
        (1, False, "ping"),
        (1, False, "ping", (), None),
        (1, False, None, ()),
        (1, False, b"ping", ()),
        (1, False, 7, ()),
        (1, False, ("ping",), ()),
    ],
)
def test_badly_shaped_message_is_a_remote_error(encoding: bytes, obj: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        Codec(encoding).decode(_encode_raw(encoding, obj))


@pytest.mark.parametrize("encoding", [MSGPACK, PICKLE])
@pytest.mark.parametrize(
    "data", [b"", b"\xc1", b"\x94\x01", b"\x80\x03(K\x01", b"garbage"]
)
def test_undecodable_bytes_are_a_remote_error(encoding: bytes, data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        Codec(encoding).decode(data)


def test_msgpack_map_keys_must_be_str_or_bytes() -> None:
    data = msgpack.packb((1, False, "m", ({1: 2},)), use_bin_type=True)
    with pytest.raises(RemoteProtocolError):
        Codec(MSGPACK).decode(data)


def test_msgpack_trailing_bytes_are_refused() -> None:
    data = msgpack.packb((1, False, "ping", ()), use_bin_type=True) + b"\x00"
    with pytest.raises(RemoteProtocolError):
        Codec(MSGPACK).decode(data)


def test_deeply_nested_msgpack_is_a_remote_error() -> None:
    depth = 100_000
    data = b"\x94\x01\xc2\xa1m" + b"\x91" * depth + b"\xc0"
    with pytest.raises(RemoteProtocolError):
        Codec(MSGPACK).decode(data)


def _nested_list_ops(depth: int) -> bytes:
    return b"]" * depth + b"a" * (depth - 1)


def _decode_must_raise_remote_error(codec: Codec, data: bytes, where: str) -> None:
    try:
        codec.decode(data)
    except RemoteProtocolError:
        return
    except Exception as exc:
        pytest.fail(
            f"BUG ({where}): {type(exc).__name__} escaped Codec.decode instead "
            f"of RemoteProtocolError: {str(exc)[:120]}"
        )
    pytest.fail("a message with a non-str name was accepted")


def test_deeply_nested_pickle_args_decode_without_recursion() -> None:
    data = b"\x80\x03(K\x01\x89X\x01\x00\x00\x00m" + _nested_list_ops(50_000) + b"t."
    msgid, flag, name, args = Codec(PICKLE).decode(data)
    assert (msgid, flag, name) == (1, False, "m")
    assert isinstance(args, list)


def test_huge_int_as_method_name_is_a_remote_error() -> None:
    data = pickle.dumps((1, False, 10**5000, ()), 3)
    _decode_must_raise_remote_error(
        Codec(PICKLE),
        data,
        "src/zodbserver/protocol/codec.py:99, {name!r} of a >4300-digit int "
        "raises ValueError",
    )


def test_deeply_nested_method_name_is_a_remote_error() -> None:
    data = b"\x80\x03(K\x01\x89" + _nested_list_ops(100_000) + b")t."
    _decode_must_raise_remote_error(
        Codec(PICKLE),
        data,
        "src/zodbserver/protocol/codec.py:99, {name!r} of a 100000-deep list "
        "raises RecursionError",
    )


# -- exception_payload ------------------------------------------------------


def test_conflict_error_payload_is_its_dict() -> None:
    exc = ConflictError(oid=OID, serials=(TID2, TID1))
    assert exception_payload(exc) == (
        "ZODB.POSException.ConflictError",
        {
            "message": "database conflict error",
            "oid": OID,
            "serials": (TID2, TID1),
            "class_name": None,
        },
    )


def test_pos_key_error_payload_is_its_args() -> None:
    assert exception_payload(POSKeyError(OID)) == (
        "ZODB.POSException.POSKeyError",
        (OID,),
    )


def test_read_only_error_payload_is_empty_args() -> None:
    assert exception_payload(ReadOnlyError()) == (
        "ZODB.POSException.ReadOnlyError",
        (),
    )


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (KeyError("x"), ("builtins.KeyError", ("x",))),
        (TypeError("t", 1), ("builtins.TypeError", ("t", 1))),
        (
            ValueError("Couldn't pickle response"),
            ("builtins.ValueError", ("Couldn't pickle response",)),
        ),
    ],
)
def test_builtin_exception_payloads(
    exc: BaseException, expected: tuple[str, Any]
) -> None:
    assert exception_payload(exc) == expected


class _ExtensionMapping(dict):  # type: ignore[type-arg]
    """What ZEO clients send for a dict subclass: a REDUCE of builtins.dict."""

    def __reduce__(self) -> Any:
        return dict, (tuple(self.items()),)


def test_pickle_admits_plain_container_constructors() -> None:
    payload = pickle.dumps((0, True, "tpc_begin", (_ExtensionMapping(a=1),)), 3)
    assert b"builtins" in payload
    assert Codec(PICKLE).decode(payload) == (0, True, "tpc_begin", ({"a": 1},))


@pytest.mark.parametrize("kind", [bytes, bytearray, type, object])
def test_pickle_refuses_other_builtin_types(kind: type) -> None:
    payload = b"\x80\x03cbuiltins\n" + kind.__name__.encode() + b"\nK\x01\x85R."
    with pytest.raises(RemoteProtocolError, match="not allowed"):
        Codec(PICKLE).decode(payload)


def test_codecs_on_one_thread_share_a_packer_that_a_big_message_replaces() -> None:
    """msgpack's Packer never shrinks its buffer: one per connection kept
    every connection's largest message resident.  Codecs share their
    thread's packer, and a message over ``PACKER_BUFFER_SIZE`` makes the
    thread start a fresh one, so the grown buffer is let go."""
    import threading

    from zodbserver.protocol import codec as codec_module

    first, second = Codec(MSGPACK), Codec(MSGPACK)
    small = (1, False, "loadBefore", (b"\0" * 8, b"\xff" * 8))
    assert msgpack.unpackb(first.encode(small)) == [
        1,
        False,
        "loadBefore",
        [b"\0" * 8, b"\xff" * 8],
    ]
    packer = codec_module._packers.packer
    assert msgpack.unpackb(second.encode(small))[0] == 1
    assert codec_module._packers.packer is packer
    big = (2, False, "reply", b"x" * (codec_module.PACKER_BUFFER_SIZE + 1))
    assert msgpack.unpackb(first.encode(big))[3] == big[3]
    assert codec_module._packers.packer is not packer
    assert msgpack.unpackb(second.encode(small))[0] == 1

    elsewhere: list[Any] = []
    thread = threading.Thread(
        target=lambda: elsewhere.append(codec_module._packers.packer)
    )
    thread.start()
    thread.join()
    assert elsewhere[0] is not codec_module._packers.packer


# -- memo indexes ----------------------------------------------------------------

#: The C unpickler grows its memo to twice a PUT's index before storing: a
#: 13-byte message could ask for gigabytes.
MEMO_PUTS = {
    "LONG_BINPUT": lambda index: b"r" + index.to_bytes(4, "little"),
    "PUT": lambda index: b"p" + str(index).encode() + b"\n",
}


@pytest.mark.parametrize("index", [2**26, 2**30, 2**32 - 1])
@pytest.mark.parametrize("opcode", sorted(MEMO_PUTS))
def test_a_memo_index_beyond_the_message_is_refused_without_allocating(
    opcode: str, index: int
) -> None:
    data = b"\x80\x03]" + MEMO_PUTS[opcode](index) + b"."
    pickletools.dis(data, out=io.StringIO())  # control: a valid pickle
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError, match="memo index"):
            Codec(PICKLE).decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, f"decoding allocated {peak} bytes"


@given(st.lists(st.binary(max_size=20), max_size=300))
def test_real_pickles_number_their_memo_within_their_length(
    items: list[bytes],
) -> None:
    """Messages as ZEO clients pickle them (protocol 3, a memo entry per
    object) decode: the check refuses no real message."""
    message = (7, False, "storea", (items, [tuple(items)], {"k": items}))
    decoded = Codec(PICKLE).decode(pickle.dumps(message, 3))
    assert decoded[3][0] == items


@pytest.mark.parametrize(
    "data",
    [
        pickle.dumps(bytearray(b"abc"), 5),  # BYTEARRAY8
        b"\x80\x05\x97\x98.",  # NEXT_BUFFER, READONLY_BUFFER
    ],
    ids=["BYTEARRAY8", "NEXT_BUFFER"],
)
def test_protocol_5_buffers_are_refused(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="is not allowed"):
        Codec(PICKLE).decode(data)
