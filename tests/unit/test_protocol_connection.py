"""Tests for the sans-IO connection state machines (``protocol.connection``).

A ``ServerConnection`` and a ``ClientConnection`` are linked over a fake wire
(bytes returned by one are fed to the other), h11-style.  The second half
checks the bytes against the real ZEO 6 codec and client error factories.
"""

from __future__ import annotations

import json
import logging
import pickle
from typing import Any

import msgpack
import pytest
import ZEO.asyncio.client as zeo_client
import ZEO.asyncio.marshal as zeo_marshal
from ZODB.POSException import ConflictError, POSKeyError, ReadOnlyError

from zodbserver.errors import LocalProtocolError, RemoteProtocolError
from zodbserver.protocol import (
    STATUS_PROBE,
    AsyncCall,
    Call,
    ClientConnection,
    ErrorReply,
    Event,
    FrameDecoder,
    Handshake,
    Heartbeat,
    Reply,
    ServerConnection,
    State,
    StatusProbe,
    encode_frame,
    negotiate_version,
)

OID = b"\x00\x00\x00\x00\x00\x00\x00\x07"
TID1 = b"\x03\xe1\x9a\x00\x00\x00\x00\x01"
TID2 = b"\x03\xe1\x9a\x00\x00\x00\x00\x02"
PROTOCOLS = [b"M5", b"Z5"]


def _open_pair(
    announce: bytes = b"M5",
) -> tuple[ServerConnection, ClientConnection]:
    """A server and client that completed the handshake over a fake wire."""
    server = ServerConnection(announce=announce)
    client = ClientConnection()
    assert client.receive_data(server.greeting()) == [Handshake(announce)]
    assert server.receive_data(client.handshake()) == [Handshake(announce)]
    assert server.encoding == client.encoding == announce[:1]
    return server, client


def _open_server(protocol: bytes) -> ServerConnection:
    server = ServerConnection()
    assert server.receive_data(encode_frame(protocol)) == [Handshake(protocol)]
    return server


def _open_client(announce: bytes) -> ClientConnection:
    client = ClientConnection()
    client.receive_data(encode_frame(announce))
    return client


def _raw(protocol: bytes, message: tuple[Any, ...]) -> bytes:
    """A frame encoded independently of our codec."""
    if protocol[:1] == b"M":
        return encode_frame(msgpack.packb(message, use_bin_type=True))
    return encode_frame(pickle.dumps(message, 3))


def _one_payload(data: bytes) -> bytes:
    (payload,) = FrameDecoder().feed(data)
    return payload


# -- handshake ----------------------------------------------------------------


def test_server_greeting_is_m5_by_default() -> None:
    assert ServerConnection().greeting() == encode_frame(b"M5")
    assert ServerConnection().state is State.HANDSHAKE


def test_server_can_announce_pickle() -> None:
    assert ServerConnection(announce=b"Z5").greeting() == encode_frame(b"Z5")


def test_server_refuses_to_announce_an_unknown_encoding() -> None:
    with pytest.raises(LocalProtocolError):
        ServerConnection(announce=b"X5")


@pytest.mark.parametrize("announce", PROTOCOLS)
@pytest.mark.parametrize("answer", PROTOCOLS)
def test_server_takes_the_encoding_the_client_answered(
    announce: bytes, answer: bytes
) -> None:
    server = ServerConnection(announce=announce)
    assert server.receive_data(encode_frame(answer)) == [Handshake(answer)]
    assert server.state is State.OPEN
    assert server.protocol == answer
    assert server.encoding == answer[:1]


def test_handshake_event_names_the_encoding() -> None:
    assert Handshake(b"Z5").encoding == b"Z"


def test_ruok_gives_a_status_probe_and_closes() -> None:
    server = ServerConnection()
    assert server.receive_data(encode_frame(STATUS_PROBE)) == [StatusProbe()]
    assert server.state is State.CLOSED


def test_frames_after_ruok_are_ignored() -> None:
    server = ServerConnection()
    data = encode_frame(b"ruok") + encode_frame(b"M5") + encode_frame(b"junk")
    assert server.receive_data(data) == [StatusProbe()]
    assert server.receive_data(encode_frame(b"M5")) == []


def test_status_answer_is_one_frame_of_ascii_json() -> None:
    status = {"1": {"connections": 2, "last-transaction": "03e19a0000000001"}}
    payload = _one_payload(ServerConnection.status(status))
    assert payload.isascii()
    assert json.loads(payload) == status


@pytest.mark.parametrize(
    "handshake",
    [b"Z4", b"X5", b"M6", b"M55", b"m5", b"5", b"M", b"", b"RUOK", b"\xff" * 9],
)
def test_bad_handshake_is_refused_and_closes(handshake: bytes) -> None:
    server = ServerConnection()
    with pytest.raises(RemoteProtocolError):
        server.receive_data(encode_frame(handshake))
    assert server.state is State.CLOSED
    assert server.receive_data(encode_frame(b"M5")) == []
    with pytest.raises(LocalProtocolError):
        server.reply(1, None)


def test_garbage_before_handshake_is_refused() -> None:
    server = ServerConnection(max_frame_size=1024)
    with pytest.raises(RemoteProtocolError):
        server.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    assert server.state is State.CLOSED


def test_handshake_and_first_call_in_one_chunk() -> None:
    server = ServerConnection()
    data = encode_frame(b"M5") + _raw(b"M5", (1, False, "register", ("1", False)))
    assert server.receive_data(data) == [
        Handshake(b"M5"),
        Call(1, "register", ("1", False)),
    ]


@pytest.mark.parametrize(
    ("announced", "version"),
    [(b"Z5", b"5"), (b"M5", b"5"), (b"Z6", b"5"), (b"Z99999", b"5"), (b"M9", b"5")],
)
def test_negotiate_version_accepts(announced: bytes, version: bytes) -> None:
    assert negotiate_version(announced) == version


@pytest.mark.parametrize("announced", [b"Z4", b"Z3101", b"Z10", b"Z0", b"Z", b"M1"])
def test_negotiate_version_refuses(announced: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        negotiate_version(announced)


@pytest.mark.parametrize(
    ("announced", "answer"),
    [
        (b"Z5", b"Z5"),
        (b"M5", b"M5"),
        (b"Z6", b"Z5"),
        (b"Z99999", b"Z5"),
        (b"M7", b"M5"),
    ],
)
def test_client_answers_with_the_server_letter_and_version_5(
    announced: bytes, answer: bytes
) -> None:
    client = ClientConnection()
    assert client.receive_data(encode_frame(announced)) == [Handshake(announced)]
    assert client.handshake() == encode_frame(answer)
    assert client.state is State.OPEN
    assert client.protocol == answer


@pytest.mark.parametrize("announced", [b"Z4", b"Z3101", b"Z10", b"X5", b"", b"5"])
def test_client_refuses_unsupported_server_and_closes(announced: bytes) -> None:
    client = ClientConnection()
    with pytest.raises(RemoteProtocolError):
        client.receive_data(encode_frame(announced))
    assert client.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        client.handshake()


# -- sending in the wrong state -----------------------------------------------


def test_server_cannot_send_before_the_handshake() -> None:
    server = ServerConnection()
    with pytest.raises(LocalProtocolError):
        server.reply(1, None)
    with pytest.raises(LocalProtocolError):
        server.error(1, KeyError("x"))
    with pytest.raises(LocalProtocolError):
        server.call_async("invalidateTransaction", (TID1, [OID]))


def test_client_cannot_send_before_the_handshake() -> None:
    client = ClientConnection()
    with pytest.raises(LocalProtocolError):
        client.handshake()
    with pytest.raises(LocalProtocolError):
        client.call(1, "register", ("1", False))
    with pytest.raises(LocalProtocolError):
        client.heartbeat()
    with pytest.raises(LocalProtocolError):
        client.call_async("set_client_label", ("x",))


def test_nothing_is_sent_or_received_after_close() -> None:
    server, client = _open_pair()
    server.close()
    client.close()
    assert server.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        server.reply(1, None)
    with pytest.raises(LocalProtocolError):
        client.call(1, "ping", ())
    assert server.receive_data(_raw(b"M5", (1, False, "ping", ()))) == []


# -- messages -----------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_call_and_reply_over_the_wire(protocol: bytes) -> None:
    server, client = _open_pair(announce=protocol)
    assert server.receive_data(client.call(1, "register", ("1", False))) == [
        Call(1, "register", ("1", False))
    ]
    assert client.receive_data(server.reply(1, TID1)) == [Reply(1, TID1)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_heartbeat(protocol: bytes) -> None:
    server, client = _open_pair(announce=protocol)
    assert server.receive_data(client.heartbeat()) == [Heartbeat()]
    assert server.receive_data(_raw(protocol, (-1, 0, ".reply", None))) == [Heartbeat()]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("flag", [True, 1, 2, "yes"])
def test_truthy_flag_is_an_async_call(protocol: bytes, flag: Any) -> None:
    server = _open_server(protocol)
    events = server.receive_data(_raw(protocol, (0, flag, "storea", (OID, TID1))))
    assert events == [AsyncCall("storea", (OID, TID1))]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("flag", [False, 0, None])
def test_falsy_flag_is_a_sync_call(protocol: bytes, flag: Any) -> None:
    server = _open_server(protocol)
    events = server.receive_data(_raw(protocol, (5, flag, "ping", ())))
    assert events == [Call(5, "ping", ())]


def test_client_call_async_reaches_the_server() -> None:
    server, client = _open_pair()
    data = client.call_async("tpc_begin", (9, b"u", b"d", {}, None, " "))
    assert server.receive_data(data) == [
        AsyncCall("tpc_begin", (9, b"u", b"d", {}, None, " "))
    ]


def test_pickled_list_arguments_become_a_tuple() -> None:
    server = _open_server(b"Z5")
    events = server.receive_data(_raw(b"Z5", (3, False, "iterator_gc", [[1, 2]])))
    assert events == [Call(3, "iterator_gc", ([1, 2],))]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("args", [None, 5, "abc", {"a": 1}])
def test_non_sequence_arguments_are_refused(protocol: bytes, args: Any) -> None:
    server = _open_server(protocol)
    with pytest.raises(RemoteProtocolError):
        server.receive_data(_raw(protocol, (1, False, "ping", args)))
    assert server.state is State.CLOSED


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_refuses_replies_from_the_client(protocol: bytes) -> None:
    server = _open_server(protocol)
    with pytest.raises(RemoteProtocolError):
        server.receive_data(_raw(protocol, (4, 0, ".reply", None)))
    assert server.state is State.CLOSED


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tuple_msgid_is_echoed_verbatim(protocol: bytes) -> None:
    server, client = _open_pair(announce=protocol)
    msgid = (OID, TID1)
    assert server.receive_data(client.call(msgid, "loadBefore", (OID, TID1))) == [
        Call(msgid, "loadBefore", (OID, TID1))
    ]
    data = server.reply(msgid, (b"data", TID2, None))
    decoded = zeo_marshal.decoder(protocol)(_one_payload(data))
    assert decoded == (msgid, 0, ".reply", (b"data", TID2, None))
    assert type(decoded[0]) is tuple
    assert client.receive_data(data) == [Reply(msgid, (b"data", TID2, None))]
    error = server.error(msgid, POSKeyError(OID))
    assert client.receive_data(error) == [
        ErrorReply(msgid, "ZODB.POSException.POSKeyError", (OID,))
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "msgid",
    [7, (OID, TID1), (OID,), (), [OID, TID1], (b"", b"\x01")],
)
def test_int_and_short_bytes_pair_msgids_are_accepted(
    protocol: bytes, msgid: Any
) -> None:
    server = _open_server(protocol)
    (event,) = server.receive_data(_raw(protocol, (msgid, 0, "ping", ())))
    assert isinstance(event, Call)
    assert event.msgid == (tuple(msgid) if isinstance(msgid, list) else msgid)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "msgid",
    [
        "1",
        1.5,
        None,
        (OID, TID1, TID2),
        (OID + b"x", TID1),
        (OID, TID1 + b"x"),
        (OID, 1),
        (1, TID1),
        ("a", "b"),
        ((OID,), TID1),
    ],
)
def test_other_msgids_are_refused(protocol: bytes, msgid: Any) -> None:
    server = _open_server(protocol)
    with pytest.raises(RemoteProtocolError, match="message id"):
        server.receive_data(_raw(protocol, (msgid, 0, "ping", ())))
    assert server.state is State.CLOSED


def test_several_frames_in_one_chunk_give_events_in_order() -> None:
    server, client = _open_pair()
    data = (
        client.call(1, "get_info", ())
        + client.call_async("set_client_label", ("x",))
        + client.heartbeat()
        + client.call(2, "ping", ())
    )
    assert server.receive_data(data) == [
        Call(1, "get_info", ()),
        AsyncCall("set_client_label", ("x",)),
        Heartbeat(),
        Call(2, "ping", ()),
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_client_receives_async_calls_from_the_server(protocol: bytes) -> None:
    server, client = _open_pair(announce=protocol)
    data = server.call_async("invalidateTransaction", (TID2, (OID,)))
    assert client.receive_data(data) == [
        AsyncCall("invalidateTransaction", (TID2, (OID,)))
    ]


# -- error replies ------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_conflict_error_reply(protocol: bytes) -> None:
    server, client = _open_pair(announce=protocol)
    exc = ConflictError(oid=OID, serials=(TID2, TID1))
    assert client.receive_data(server.error(3, exc)) == [
        ErrorReply(
            3,
            "ZODB.POSException.ConflictError",
            {
                "message": "database conflict error",
                "oid": OID,
                "serials": (TID2, TID1),
                "class_name": None,
            },
        )
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_error_reply_wire_shape(protocol: bytes) -> None:
    server = _open_server(protocol)
    decoded = zeo_marshal.decoder(protocol)(
        _one_payload(server.error(8, KeyError("k")))
    )
    assert decoded == (8, 2, ".reply", ("builtins.KeyError", ("k",)))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unencodable_reply_becomes_couldnt_pickle_error(
    protocol: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    server, client = _open_pair(announce=protocol)
    with caplog.at_level(logging.CRITICAL + 1):
        data = server.reply(6, {"result": lambda: None})
    assert server.state is State.OPEN
    assert client.receive_data(data) == [
        ErrorReply(6, "builtins.ValueError", ("Couldn't pickle response",))
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_error_with_unencodable_state_falls_back_to_its_message(
    protocol: bytes,
) -> None:
    server, client = _open_pair(announce=protocol)
    exc = ValueError("boom")
    exc.callback = lambda: None  # type: ignore[attr-defined]
    assert client.receive_data(server.error(2, exc)) == [
        ErrorReply(2, "builtins.ValueError", ("boom",))
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("args", [None, (), ("only-name",), ("a", "b", "c"), 7])
def test_malformed_error_reply_is_refused(protocol: bytes, args: Any) -> None:
    client = _open_client(protocol)
    with pytest.raises(RemoteProtocolError):
        client.receive_data(_raw(protocol, (1, 2, ".reply", args)))
    assert client.state is State.CLOSED


def _client_must_refuse(client: ClientConnection, data: bytes, where: str) -> None:
    try:
        client.receive_data(data)
    except RemoteProtocolError:
        assert client.state is State.CLOSED
        return
    except Exception as exc:
        pytest.fail(
            f"BUG ({where}): {type(exc).__name__} escaped "
            f"ClientConnection.receive_data instead of RemoteProtocolError, and "
            f"the connection stays {client.state.value}: {str(exc)[:100]}"
        )


def test_error_reply_with_huge_int_class_name_is_a_remote_error() -> None:
    client = _open_client(b"Z5")
    data = _raw(b"Z5", (1, 2, ".reply", (10**5000, {})))
    _client_must_refuse(
        client,
        data,
        "src/zodbserver/protocol/connection.py:232, str(class_name) of a "
        ">4300-digit int raises ValueError",
    )


def test_malformed_error_reply_with_huge_int_is_a_remote_error() -> None:
    client = _open_client(b"Z5")
    data = _raw(b"Z5", (1, 2, ".reply", (10**5000,)))
    _client_must_refuse(
        client,
        data,
        "src/zodbserver/protocol/connection.py:230, {args!r} of a "
        ">4300-digit int raises ValueError",
    )


def test_malformed_deeply_nested_error_reply_is_a_remote_error() -> None:
    client = _open_client(b"Z5")
    depth = 100_000
    payload = (
        b"\x80\x03(K\x01K\x02X\x06\x00\x00\x00.reply"
        + b"]" * depth
        + b"a" * (depth - 1)
        + b"t."
    )
    _client_must_refuse(
        client,
        encode_frame(payload),
        "src/zodbserver/protocol/connection.py:230, {args!r} of a "
        "100000-deep list raises RecursionError",
    )


# -- interoperability with the real ZEO 6 codec --------------------------------

ZEO_CLIENT_MESSAGES: list[tuple[Any, ...]] = [
    (1, False, "register", ("1", False)),
    ((OID, TID1), False, "loadBefore", (OID, TID1)),
    (2, False, "new_oids", ()),
    (0, True, "tpc_begin", (140234, b"user", b"desc", {"x": 1}, None, " ")),
    (0, True, "storea", (OID, b"\0" * 8, b"pickle-data", 140234)),
    (3, False, "vote", (140234,)),
    (-1, 0, ".reply", None),
]


def _expected_event(message: tuple[Any, ...]) -> Event:
    msgid, flag, name, args = message
    if msgid == -1:
        return Heartbeat()
    if flag:
        return AsyncCall(name, args)
    return Call(msgid, name, args)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_zeo_client_encoder_output_decodes_on_our_server(protocol: bytes) -> None:
    encode = zeo_marshal.encoder(protocol)
    server = _open_server(protocol)
    for message in ZEO_CLIENT_MESSAGES:
        events = server.receive_data(encode_frame(encode(*message)))
        assert events == [_expected_event(message)], message


ZEO_SERVER_MESSAGES: list[tuple[tuple[Any, ...], Event]] = [
    ((1, 0, ".reply", TID1), Reply(1, TID1)),
    (
        ((OID, TID1), 0, ".reply", (b"d", TID1, None)),
        Reply((OID, TID1), (b"d", TID1, None)),
    ),
    ((2, 0, ".reply", None), Reply(2, None)),
    (
        (0, True, "invalidateTransaction", (TID2, (OID,))),
        AsyncCall("invalidateTransaction", (TID2, (OID,))),
    ),
    (
        (4, 2, ".reply", zeo_marshal.reduce_exception(POSKeyError(OID))),
        ErrorReply(4, "ZODB.POSException.POSKeyError", (OID,)),
    ),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_zeo_server_encoder_output_decodes_on_our_client(protocol: bytes) -> None:
    encode = zeo_marshal.encoder(protocol, server=True)
    client = _open_client(protocol)
    for message, expected in ZEO_SERVER_MESSAGES:
        assert client.receive_data(encode_frame(encode(*message))) == [expected]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_our_server_output_decodes_with_zeo_client_decoder(protocol: bytes) -> None:
    decode = zeo_marshal.decoder(protocol)
    server = _open_server(protocol)
    info = {
        "length": 3,
        "size": 1024,
        "name": "1",
        "supportsUndo": True,
        "interfaces": (("ZODB.interfaces", "IStorageIteration"),),
    }
    assert decode(_one_payload(server.reply(1, info))) == (1, 0, ".reply", info)
    assert decode(_one_payload(server.reply(2, None))) == (2, 0, ".reply", None)
    sent = server.call_async("invalidateTransaction", (TID2, (OID,)))
    assert decode(_one_payload(sent)) == (
        0,
        True,
        "invalidateTransaction",
        (TID2, (OID,)),
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_our_client_output_decodes_with_zeo_server_decoder(protocol: bytes) -> None:
    decode = zeo_marshal.server_decoder(protocol)
    _, client = _open_pair(announce=protocol)
    assert decode(_one_payload(client.call(1, "register", ("1", False)))) == (
        1,
        False,
        "register",
        ("1", False),
    )
    assert decode(_one_payload(client.heartbeat())) == (-1, 0, ".reply", None)


def _zeo_client_exception(protocol: bytes, data: bytes) -> Any:
    """What a ZEO 6 client raises for an error reply (see its message_received)."""
    _msgid, flag, name, args = zeo_marshal.decoder(protocol)(_one_payload(data))
    assert name == ".reply"
    assert flag, "ZEO clients treat only a truthy flag as an error"
    class_name, payload = args
    factory = zeo_client.exc_factories[class_name]
    return factory(class_name, payload)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_conflict_error_reaches_zeo_client_with_oid_and_serials(
    protocol: bytes,
) -> None:
    server = _open_server(protocol)
    data = server.error(1, ConflictError(oid=OID, serials=(TID2, TID1)))
    exc = _zeo_client_exception(protocol, data)
    assert type(exc) is ConflictError
    assert exc.oid == OID
    assert exc.serials == (TID2, TID1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pos_key_error_reaches_zeo_client(protocol: bytes) -> None:
    server = _open_server(protocol)
    exc = _zeo_client_exception(protocol, server.error(1, POSKeyError(OID)))
    assert type(exc) is POSKeyError
    assert exc.args == (OID,)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_read_only_error_reaches_zeo_client(protocol: bytes) -> None:
    server = _open_server(protocol)
    exc = _zeo_client_exception(protocol, server.error(1, ReadOnlyError()))
    assert type(exc) is ReadOnlyError


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_couldnt_pickle_response_is_decodable_by_zeo_client(
    protocol: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    server = _open_server(protocol)
    with caplog.at_level(logging.CRITICAL + 1):
        data = server.reply(1, lambda: None)
    decoded = zeo_marshal.decoder(protocol)(_one_payload(data))
    assert decoded == (
        1,
        2,
        ".reply",
        ("builtins.ValueError", ("Couldn't pickle response",)),
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("value", [{b"x"}, frozenset({b"y"})])
def test_reply_holding_a_set_is_decodable_by_zeo_client(
    protocol: bytes, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/protocol.md, The two encodings: a server sends plain data only, no set."""
    server = _open_server(protocol)
    with caplog.at_level(logging.CRITICAL + 1):
        data = server.reply(1, value)
    try:
        zeo_marshal.decoder(protocol)(_one_payload(data))
    except Exception as exc:
        pytest.fail(
            "BUG (src/zodbserver/protocol/codec.py, Codec.encode, Z branch): "
            f"reply({type(value).__name__}) in {protocol!r} pickles the global "
            f"builtins.{type(value).__name__}, which the ZEO client refuses "
            f"({exc}); msgpack sends a tuple instead"
        )


def test_close_keeps_the_encoding_but_drops_the_buffers() -> None:
    server, client = _open_pair(announce=b"M5")
    partial = client.call(1, "ping", ())[:-1]
    assert server.receive_data(partial) == []
    server.close()
    assert server.encoding == b"M"
    assert server.protocol == b"M5"
    assert server._codec is None
    assert server._frames.pending == 0
    assert server.receive_data(b"x") == []
    with pytest.raises(LocalProtocolError):
        server.reply(1, None)


def test_events_are_decoded_one_at_a_time() -> None:
    """``iter_events`` hands out each message before decoding the next, so
    a chunk of many pipelined calls is never held decoded all at once: a
    call is seen even when a later frame in the same chunk is garbage."""
    server = _open_server(b"M5")
    client = _open_client(b"M5")
    chunk = client.call(1, "loadBefore", (OID, OID)) + encode_frame(b"\xc1")
    events = server.iter_events(chunk)
    first = next(events)
    assert isinstance(first, Call)
    assert first.msgid == 1
    with pytest.raises(RemoteProtocolError):
        next(events)
    assert server.state is State.CLOSED
