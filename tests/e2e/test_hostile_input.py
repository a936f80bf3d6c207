"""Hostile and broken clients against a real server over raw sockets.

Each test runs a server (``ServerThread`` on 127.0.0.1 port 0) over a real
FileStorage, commits a known baseline with a stock ZEO 6 client, registers a
well-behaved raw "bystander" connection, and then misbehaves on a raw
socket: garbage, huge or truncated frames, unknown methods, wrong argument
types, calls out of order, pickles that name globals, malformed and deeply
nested messages, clients that die or stall in the middle of a commit.

For each, the test asserts the specific outcome (an error reply naming the
expected exception class, or the connection closed promptly) and then, in
``assert_intact``, that the server still serves everyone else: the
bystander still gets answers and invalidations, a ZEO 6 client still
commits and reads, and the committed transactions are exactly the baseline
plus the ones the test expects -- nothing changed, nothing of the hostile
client's was committed.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZEO.ClientStorage import ClientStorage
from ZODB.FileStorage import FileStorage

from support.raw_client import PROMPTLY, RawClient
from support.waiting import read_until, wait_until
from zodbserver.protocol import ErrorReply, Reply, encode_frame
from zodbserver.server.thread import ServerThread

Z64 = b"\0" * 8
MAXTID = b"\x7f" + b"\xff" * 7

ARGUMENT_ERROR = "builtins.TypeError"
PROTOCOL_ERROR = "zodbserver.errors.RemoteProtocolError"
TRANSACTION_ERROR = "ZODB.POSException.StorageTransactionError"
POS_KEY_ERROR = "ZODB.POSException.POSKeyError"


def record(value: Any) -> bytes:
    """A ZODB data record: a PersistentMapping holding ``value``."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, 3)
    pickler.dump(PersistentMapping)
    pickler.dump({"data": {"value": value}})
    return buffer.getvalue()


def raw_commit(client: RawClient, oid: bytes, data: bytes, token: int = 1) -> bytes:
    """Store one new object in one transaction; return the tid."""
    client.call_async("tpc_begin", token, b"", b"", {})
    client.call_async("storea", oid, Z64, data, token)
    assert client.result("vote", token) == ()
    tid = client.result("tpc_finish", token)
    assert isinstance(tid, bytes)
    assert len(tid) == 8
    return tid


def assert_unknown_oid(client: RawClient, oid: bytes) -> None:
    event = client.call("loadBefore", oid, MAXTID)
    assert isinstance(event, ErrorReply), event
    assert event.class_name == POS_KEY_ERROR


# -- the server under test ----------------------------------------------------


def transactions(storage: Any) -> list[tuple[bytes, tuple[tuple[bytes, bytes], ...]]]:
    """Every committed transaction: its tid and its (oid, data) records."""
    return [
        (txn.tid, tuple((rec.oid, rec.data) for rec in txn))
        for txn in storage.iterator()
    ]


def open_zeo(address: Any, **options: Any) -> ClientStorage:
    return ClientStorage(address, wait_timeout=PROMPTLY, **options)


@dataclass
class Server:
    thread: ServerThread
    address: Any
    bystander: RawClient
    #: The transactions committed so far, as ``transactions`` lists them.
    committed: list[Any] = field(default_factory=list)
    checks: int = 0

    def raw(self, **options: Any) -> RawClient:
        return RawClient(self.address, **options)

    def registered(self, **options: Any) -> RawClient:
        client = self.raw(**options)
        assert client.result("register", "1", False) == self.committed[-1][0]
        return client

    def assert_intact(self, new_tids: tuple[bytes, ...] = ()) -> None:
        """The server still serves, and the committed data is as expected.

        ``new_tids`` are the transactions the test committed itself since
        the last check; anything else new, or any change to an older
        transaction, fails.
        """
        self.checks += 1
        bystander = self.bystander
        assert bystander.result("ping") is None
        storage = open_zeo(self.address)
        db = ZODB.DB(storage)
        try:
            now = transactions(storage)
            assert now[: len(self.committed)] == self.committed
            assert tuple(tid for tid, _ in now[len(self.committed) :]) == new_tids

            manager = transaction.TransactionManager()
            connection = db.open(manager)
            root = connection.root()
            assert dict(root["baseline"]) == {"a": 1, "b": b"two", "c": [3]}
            root["checks"] = self.checks
            manager.commit()
            tid = storage.lastTransaction()
            connection.close()

            manager = transaction.TransactionManager()
            connection = db.open(manager)
            assert connection.root()["checks"] == self.checks
            connection.close()
            self.committed = transactions(storage)
            assert self.committed[-1][0] == tid
        finally:
            db.close()
        # The bystander was told about the check commit, in order.
        assert bystander.result("ping") is None
        invalidations = [
            call.args for call in bystander.async_calls if call.method != "info"
        ]
        assert invalidations, "the bystander got no invalidation"
        assert invalidations[-1][0] == tid
        tids = [args[0] for args in invalidations]
        assert tids == sorted(set(tids))


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Server]:
    options = {"msgpack": True, **getattr(request, "param", {})}
    thread = ServerThread({"1": FileStorage(str(tmp_path / "Data.fs"))}, **options)
    address = thread.start()
    try:
        storage = open_zeo(address)
        db = ZODB.DB(storage)
        try:
            with db.transaction() as connection:
                connection.root()["baseline"] = PersistentMapping(
                    {"a": 1, "b": b"two", "c": [3]}
                )
            committed = transactions(storage)
        finally:
            db.close()
        bystander = RawClient(address)
        try:
            assert bystander.result("register", "1", False) == committed[-1][0]
            yield Server(thread, address, bystander, committed)
        finally:
            bystander.close()
    finally:
        thread.stop()


def asyncio_fatal_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Errors that asyncio's last-resort handler had to catch.

    Bad input must be handled by the server's own code (an error reply or
    a deliberate close), never by an exception escaping the protocol
    callbacks into asyncio ("Fatal error: protocol.data_received() ...").
    """
    return [
        r.getMessage()
        for when in ("setup", "call")
        for r in caplog.get_records(when)
        if r.name == "asyncio" and r.levelno >= logging.ERROR
    ]


@pytest.fixture
def no_fatal_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING, logger="asyncio")
    yield
    fatal = asyncio_fatal_errors(caplog)
    assert not fatal, fatal


# -- garbage and framing ------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http"),
        pytest.param(encode_frame(b"XX"), id="framed-junk"),
        pytest.param(encode_frame(b"M4"), id="old-version"),
        pytest.param(encode_frame(b"Z55"), id="long-version"),
        pytest.param(encode_frame(bytes(range(256)) * 4), id="binary"),
    ],
)
def test_garbage_instead_of_handshake_closes(
    server: Server, garbage: bytes, no_fatal_errors: None
) -> None:
    with server.raw(handshake=False) as client:
        client.sock.sendall(garbage)
        assert client.closed_by_server()
    server.assert_intact()


def test_huge_length_prefix_is_refused_without_buffering(
    server: Server, no_fatal_errors: None
) -> None:
    with server.registered() as client:
        started = time.monotonic()
        client.sock.sendall((2**32 - 1).to_bytes(4, "big") + b"x" * 1000)
        # Refused on the prefix alone: we never send the 4 GiB, and the
        # server does not wait for it.
        assert client.closed_by_server()
        assert time.monotonic() - started < PROMPTLY
    server.assert_intact()


def test_huge_length_prefix_before_handshake(
    server: Server, no_fatal_errors: None
) -> None:
    with server.raw(handshake=False) as client:
        client.sock.sendall(b"\xff\xff\xff\xff")
        assert client.closed_by_server()
    server.assert_intact()


def test_truncated_frame_then_close(server: Server, no_fatal_errors: None) -> None:
    with server.registered() as client:
        oid = client.result("new_oids", 1)[0]
        # Half a storea frame, then the client goes away.
        client.call_async("tpc_begin", 1, b"", b"", {})
        assert client.result("ping") is None
        frame = client.connection.call_async("storea", (oid, Z64, record(1), 1))
        client.sock.sendall(frame[: len(frame) // 2])
        status = server.bystander.result("server_status")
        assert status["connections"] == 2
        assert status["active_txns"] == 1
    # The server noticed the disconnect and dropped the pending transaction.
    status = read_until(
        lambda: server.bystander.result("server_status"),
        lambda seen: (seen["connections"], seen["active_txns"]) == (1, 0),
        timeout=PROMPTLY,
    )
    assert (status["connections"], status["active_txns"]) == (1, 0), status
    assert_unknown_oid(server.bystander, oid)
    server.assert_intact()


def test_truncated_handshake_then_close(server: Server, no_fatal_errors: None) -> None:
    with server.raw(handshake=False) as client:
        client.sock.sendall(b"\x00\x00\x00\x02M")
    assert server.bystander.result("server_status")["connections"] == 1
    server.assert_intact()


# -- methods and arguments ----------------------------------------------------


def test_unknown_sync_method_gets_an_error_reply(
    server: Server, no_fatal_errors: None
) -> None:
    with server.registered() as client:
        for name in ("nosuch", "__class__", "_replay_and_vote", "undo", "close"):
            event = client.call(name)
            assert isinstance(event, ErrorReply), (name, event)
            assert event.class_name == PROTOCOL_ERROR
            assert name in event.payload[0]
        # The connection stays usable after an error reply.
        assert client.result("ping") is None
    server.assert_intact()


@pytest.mark.parametrize("name", ["nosuch", "__init__", "ping", "vote"])
def test_unknown_or_sync_method_called_async_closes(
    server: Server, name: str, no_fatal_errors: None
) -> None:
    with server.registered() as client:
        client.call_async(name)
        assert client.closed_by_server()
    server.assert_intact()


@pytest.mark.parametrize(
    ("method", "args"),
    [
        pytest.param("loadBefore", (1, MAXTID), id="loadBefore-int-oid"),
        pytest.param("loadBefore", (b"short", MAXTID), id="loadBefore-short-oid"),
        pytest.param("loadBefore", (Z64,), id="loadBefore-too-few"),
        pytest.param("history", (Z64, "many"), id="history-str-size"),
        pytest.param("new_oids", (b"5",), id="new_oids-bytes"),
        pytest.param("getInvalidations", (None,), id="getInvalidations-none"),
        pytest.param("ping", (1, 2, 3), id="ping-too-many"),
    ],
)
def test_wrong_argument_types_get_argument_error(
    server: Server, method: str, args: tuple[Any, ...], no_fatal_errors: None
) -> None:
    with server.registered() as client:
        event = client.call(method, *args)
        assert isinstance(event, ErrorReply), event
        assert event.class_name == ARGUMENT_ERROR
        assert f"{method}()" in event.payload[0]
        assert client.result("ping") is None
    server.assert_intact()


@pytest.mark.parametrize("name", [["1"], {"1": 1}, 1, None])
def test_register_with_wrong_types(
    server: Server, name: Any, no_fatal_errors: None
) -> None:
    with server.raw() as client:
        event = client.call("register", name, False)
        assert isinstance(event, ErrorReply), event
        assert event.class_name == ARGUMENT_ERROR
        assert "register()" in event.payload[0]
        # Still unregistered: other calls are refused.
        event = client.call("lastTransaction")
        assert isinstance(event, ErrorReply)
        assert event.class_name == PROTOCOL_ERROR
        # A correct register still works.
        assert client.result("register", "1", False) == server.committed[-1][0]
    server.assert_intact()


@pytest.mark.parametrize(
    "args",
    [
        pytest.param((b"\0" * 7 + b"\1", Z64, "text, not bytes", 1), id="str-data"),
        pytest.param((1, Z64, b"data", 1), id="int-oid"),
        pytest.param((Z64, Z64, b"data", {"a": 1}), id="dict-token"),
        pytest.param((Z64, Z64), id="too-few"),
    ],
)
def test_storea_with_wrong_types_fails_the_vote(
    server: Server, args: tuple[Any, ...], no_fatal_errors: None
) -> None:
    with server.registered() as client:
        client.call_async("tpc_begin", 1, b"", b"", {})
        client.call_async("storea", *args)
        # An async call cannot be answered: the vote reports what was wrong.
        event = client.call("vote", 1)
        assert isinstance(event, ErrorReply), event
        assert event.class_name == ARGUMENT_ERROR
        assert "storea()" in event.payload[0]
        # The connection, and a new transaction on it, still work.
        assert client.result("ping") is None
        oid = client.result("new_oids", 1)[0]
        tid = raw_commit(client, oid, record("after"), token=2)
    server.assert_intact((tid,))


@pytest.mark.parametrize("undo_id", [b"x" * 1000, b"", b"AAAA"])
def test_undo_of_an_id_that_is_no_tid_is_an_undo_error(
    server: Server, undo_id: bytes, no_fatal_errors: None
) -> None:
    with server.registered() as client:
        client.call_async("tpc_begin", 1, b"", b"", {})
        client.call_async("undoa", undo_id, 1)
        event = client.call("vote", 1)
        assert isinstance(event, ErrorReply), event
        assert event.class_name == "ZODB.POSException.UndoError"
        assert client.result("tpc_abort", 1) is None
        assert client.result("ping") is None


def test_duplicate_register_is_refused(server: Server, no_fatal_errors: None) -> None:
    with server.registered() as client:
        event = client.call("register", "1", False)
        assert isinstance(event, ErrorReply)
        assert event.class_name == "builtins.ValueError"
        assert client.result("ping") is None
    server.assert_intact()


# -- calls out of order -------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("lastTransaction", ()),
        ("loadBefore", (Z64, MAXTID)),
        ("new_oids", (5,)),
        ("vote", (1,)),
        ("tpc_finish", (1,)),
        ("server_status", ()),
        ("pack", (time.time(),)),
    ],
)
def test_sync_calls_before_register_are_refused(
    server: Server, method: str, args: tuple[Any, ...], no_fatal_errors: None
) -> None:
    with server.raw() as client:
        event = client.call(method, *args)
        assert isinstance(event, ErrorReply), event
        assert event.class_name == PROTOCOL_ERROR
        assert "before register" in event.payload[0]
    server.assert_intact()


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("tpc_begin", (1, b"", b"", {})),
        ("storea", (Z64, Z64, b"data", 1)),
        ("set_client_label", ("evil",)),
    ],
)
def test_async_calls_before_register_close(
    server: Server, method: str, args: tuple[Any, ...], no_fatal_errors: None
) -> None:
    with server.raw() as client:
        client.call_async(method, *args)
        assert client.closed_by_server()
    server.assert_intact()


def test_vote_without_tpc_begin(server: Server, no_fatal_errors: None) -> None:
    with server.registered() as client:
        event = client.call("vote", 1)
        assert isinstance(event, ErrorReply), event
        assert event.class_name == TRANSACTION_ERROR
        # Nothing is locked: the client itself can commit right away.
        oid = client.result("new_oids", 1)[0]
        tid = raw_commit(client, oid, record("after"), token=2)
    server.assert_intact((tid,))


def test_stores_without_tpc_begin_fail_the_vote(
    server: Server, no_fatal_errors: None
) -> None:
    with server.registered() as client:
        oid = client.result("new_oids", 1)[0]
        client.call_async("storea", oid, Z64, record(1), 7)
        event = client.call("vote", 7)
        assert isinstance(event, ErrorReply), event
        assert event.class_name == TRANSACTION_ERROR
        assert client.result("tpc_abort", 7) is None
        assert_unknown_oid(client, oid)
    server.assert_intact()


def test_tpc_finish_with_unknown_token(server: Server, no_fatal_errors: None) -> None:
    with server.registered() as client:
        # ZEO answers None for a token it does not know; nothing commits.
        assert client.result("tpc_finish", 12345) is None
        assert client.result("lastTransaction") == server.committed[-1][0]
        # With a voted transaction under another token, still nothing.
        oid = client.result("new_oids", 1)[0]
        client.call_async("tpc_begin", 1, b"", b"", {})
        client.call_async("storea", oid, Z64, record(1), 1)
        assert client.result("vote", 1) == ()
        assert client.result("tpc_finish", 2) is None
        assert client.result("lastTransaction") == server.committed[-1][0]
        assert client.result("tpc_abort", 1) is None
        assert_unknown_oid(client, oid)
    server.assert_intact()


def test_tpc_finish_without_vote(server: Server, no_fatal_errors: None) -> None:
    with server.registered() as client:
        oid = client.result("new_oids", 1)[0]
        client.call_async("tpc_begin", 1, b"", b"", {})
        client.call_async("storea", oid, Z64, record(1), 1)
        event = client.call("tpc_finish", 1)
        assert isinstance(event, ErrorReply), event
        assert event.class_name == TRANSACTION_ERROR
        assert client.result("tpc_abort", 1) is None
        assert_unknown_oid(client, oid)
    server.assert_intact()


def test_calls_after_the_vote_fail_the_finish(
    server: Server, no_fatal_errors: None
) -> None:
    """A store after the vote and a second vote are refused, and the finish
    fails: nothing commits that the client did not see voted.  The storage
    is left out of the transaction, so the next client commits (ending the
    voted transaction at the second vote used to leave the storage inside
    it, and every later vote waiting for it)."""
    with server.registered() as client:
        oid = _begin_and_store(client, "voted")
        assert client.result("vote", 1) == ()
        client.call_async("storea", oid, Z64, record("after the vote"), 1)
        event = client.call("vote", 1)
        assert isinstance(event, ErrorReply), event
        assert event.class_name == TRANSACTION_ERROR
        event = client.call("tpc_finish", 1)
        assert isinstance(event, ErrorReply), event
        assert client.result("tpc_abort", 1) is None
        assert_unknown_oid(client, oid)
    with server.registered() as other:
        other_oid = _begin_and_store(other, "next")
        assert other.result("vote", 1) == ()
        tid = other.result("tpc_finish", 1)
        assert other.result("loadBefore", other_oid, MAXTID)[1] == tid
    server.assert_intact(new_tids=(tid,))


def test_calls_in_one_packet_are_taken_in_the_order_sent(
    server: Server, no_fatal_errors: None
) -> None:
    """The vote checks the transaction when its frame arrives, not when its
    answer is computed: a vote sent before its tpc_begin in the same packet
    is refused, and a store sent after the vote in the same packet fails
    the finish -- nothing commits out of order."""
    with server.registered() as client:
        oid = client.result("new_oids", 1)[0]
        connection = client.connection
        vote = 7
        client.sock.sendall(
            connection.call(vote, "vote", (1,))
            + connection.call_async("tpc_begin", (1, "", "", {}))
            + connection.call_async("storea", (oid, Z64, record("early vote"), 1))
        )
        event = client.next_event()
        assert isinstance(event, ErrorReply), event
        assert (event.msgid, event.class_name) == (vote, TRANSACTION_ERROR)
        assert client.result("tpc_abort", 1) is None
        assert_unknown_oid(client, oid)

        late = client.result("new_oids", 1)[0]
        client.call_async("tpc_begin", 2, "", "", {})
        client.call_async("storea", oid, Z64, record("voted"), 2)
        client.sock.sendall(
            connection.call(8, "vote", (2,))
            + connection.call_async("storea", (late, Z64, record("late"), 2))
        )
        event = client.next_event()
        assert isinstance(event, Reply), event
        event = client.call("tpc_finish", 2)
        assert isinstance(event, ErrorReply), event
        assert client.result("tpc_abort", 2) is None
        assert_unknown_oid(client, oid)
        assert_unknown_oid(client, late)
    server.assert_intact()


# -- what the decoder must refuse ---------------------------------------------


class _Reduce:
    """Pickles as a call of ``function(*args)``."""

    def __init__(self, function: Any, *args: Any) -> None:
        self.function = function
        self.args = args

    def __reduce__(self) -> Any:
        return self.function, self.args


def _evil_payloads(sentinel: str) -> dict[str, Any]:
    import builtins

    return {
        "os.system": _Reduce(os.system, f"touch {sentinel}"),
        "builtins.eval": _Reduce(builtins.eval, f"open({sentinel!r}, 'w').close()"),
        "builtins.exec": _Reduce(builtins.exec, f"open({sentinel!r}, 'w').close()"),
    }


@pytest.mark.parametrize(
    "registered", [False, True], ids=["unregistered", "registered"]
)
@pytest.mark.parametrize("where", ["args", "msgid", "message"])
@pytest.mark.parametrize("function", ["os.system", "builtins.eval", "builtins.exec"])
def test_pickle_naming_a_global_is_refused(
    server: Server,
    tmp_path: Any,
    function: str,
    where: str,
    registered: bool,
    no_fatal_errors: None,
) -> None:
    sentinel = str(tmp_path / "pwned")
    evil = _evil_payloads(sentinel)[function]
    message = {
        "args": (1, False, "ping", (evil,)),
        "msgid": (evil, False, "ping", ()),
        "message": evil,
    }[where]
    with server.raw(answer=b"Z5") as client:
        if registered:
            assert client.result("register", "1", False) == server.committed[-1][0]
        client.send_frame(pickle.dumps(message, 3))
        assert client.closed_by_server()
    assert not os.path.exists(sentinel)
    server.assert_intact()
    assert not os.path.exists(sentinel)


@pytest.mark.parametrize("server", [{"msgpack": False}], indirect=True, ids=["Z5"])
def test_pickle_server_refuses_globals(
    server: Server, tmp_path: Any, no_fatal_errors: None
) -> None:
    sentinel = str(tmp_path / "pwned")
    assert server.bystander.greeting[4:] == b"Z5"
    with server.registered() as client:
        # A well-formed pickle call works...
        assert client.result("ping") is None
        # ...one naming os.system does not run and drops the client.
        evil = _Reduce(os.system, f"touch {sentinel}")
        client.send_frame(pickle.dumps((2, False, "ping", (evil,)), 3))
        assert client.closed_by_server()
    assert not os.path.exists(sentinel)
    server.assert_intact()


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x93\x01\xc2\xa4ping", id="3-tuple"),
        pytest.param(b"\x95\x01\xc2\xa4ping\x90\x90", id="5-tuple"),
        pytest.param(b"\x81\xa1a\x01", id="map"),
        pytest.param(b"\x2a", id="int"),
        pytest.param(b"\xc0", id="nil"),
        pytest.param(b"\xa4ping", id="str"),
        pytest.param(b"\x94\x01\xc2\x01\x90", id="int-method-name"),
        pytest.param(b"\x94\x01\xc2\xa4ping\x2a", id="int-args"),
        pytest.param(b"\x94\x01\xc2\xa4ping", id="truncated"),
        pytest.param(b"\x94\x01\xc2\xa4ping\x90\x90", id="extra-data"),
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(b"\xd4\x01\x02", id="ext-type"),
        pytest.param(b"", id="empty"),
    ],
)
def test_msgpack_message_that_is_not_a_call_closes(
    server: Server, payload: bytes, no_fatal_errors: None
) -> None:
    with server.registered() as client:
        client.send_frame(payload)
        assert client.closed_by_server()
    server.assert_intact()


DEPTH = 100_000


def _deep_pickle_tuple() -> bytes:
    """Pickle opcodes for a tuple nested DEPTH deep (no recursion needed)."""
    return b"(" * DEPTH + b")" + b"t" * DEPTH


def _pickle_string(text: str) -> bytes:
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def _deep_pickle_message(where: str) -> bytes:
    deep = _deep_pickle_tuple()
    oid = b"C\x08" + Z64
    msgid = b"K\x01"
    if where == "msgid":
        body = deep + b"\x89" + _pickle_string("ping") + b")"
    elif where == "sync-args":
        body = msgid + b"\x89" + _pickle_string("loadBefore") + deep + oid + b"\x86"
    elif where == "async-args":
        body = (
            b"K\x00\x88"
            + _pickle_string("storea")
            + b"("
            + deep
            + oid
            + b"C\x01x"
            + b"K\x01t"
        )
    else:  # "whole": the message itself is nested, not a 4-tuple
        return b"\x80\x03" + deep + b"."
    return b"\x80\x03(" + body + b"t."


@pytest.mark.parametrize("where", ["msgid", "sync-args", "async-args", "whole"])
def test_deeply_nested_pickle(
    server: Server, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    with server.raw(answer=b"Z5") as client:
        assert client.result("register", "1", False) == server.committed[-1][0]
        if where == "async-args":
            client.call_async("tpc_begin", 1, b"", b"", {})
        client.send_frame(_deep_pickle_message(where))
        # An async call's error comes at the vote.
        asynchronous = where == "async-args"
        event = client.call("vote", 1) if asynchronous else client.next_event()
        # Either refused with an argument error naming the call, or dropped.
        if event is not None:
            assert isinstance(event, ErrorReply), event
            assert event.class_name in (ARGUMENT_ERROR, PROTOCOL_ERROR), event
            assert client.result("ping") is None
    fatal = asyncio_fatal_errors(caplog)
    assert not fatal, fatal
    server.assert_intact()


@pytest.mark.parametrize("where", ["args", "msgid", "whole"])
def test_deeply_nested_msgpack(
    server: Server, where: str, no_fatal_errors: None
) -> None:
    deep = b"\x91" * DEPTH + b"\xc0"
    payload = {
        "args": b"\x94\x01\xc2\xaaloadBefore\x92" + deep + b"\xc4\x08" + Z64,
        "msgid": b"\x94" + deep + b"\xc2\xa4ping\x90",
        "whole": deep,
    }[where]
    with server.registered() as client:
        client.send_frame(payload)
        assert client.closed_by_server()
    server.assert_intact()


# -- clients that die or stall in a transaction -------------------------------


def _begin_and_store(client: RawClient, value: Any) -> bytes:
    oid = client.result("new_oids", 1)[0]
    client.call_async("tpc_begin", 1, b"dead", b"the dead client's", {})
    client.call_async("storea", oid, Z64, record(value), 1)
    return oid


def test_disconnect_after_storea(server: Server, no_fatal_errors: None) -> None:
    with server.registered() as dead:
        dead_oid = _begin_and_store(dead, "dead")
        assert dead.result("ping") is None  # the stores have been applied
    with server.registered() as other:
        oid = other.result("new_oids", 1)[0]
        tid = raw_commit(other, oid, record("alive"))
        assert_unknown_oid(other, dead_oid)
    server.assert_intact((tid,))


def test_disconnect_while_holding_the_commit_lock(
    server: Server, no_fatal_errors: None
) -> None:
    with server.registered() as other:
        other_oid = other.result("new_oids", 1)[0]
        with server.registered() as dead:
            dead_oid = _begin_and_store(dead, "dead")
            assert dead.result("vote", 1) == ()  # holds the commit lock now
            # A second client's vote waits for the lock...
            other.call_async("tpc_begin", 1, b"", b"", {})
            other.call_async("storea", other_oid, Z64, record("alive"), 1)
            vote = other.send_call("vote", 1)
            assert other.result("ping") is None
            assert other.events == []
            assert server.bystander.result("server_status")["waiting"] == 1
        # ...until the holder dies: then it is granted promptly.
        started = time.monotonic()
        event = other.next_event()
        assert isinstance(event, Reply), event
        assert event.msgid == vote
        assert time.monotonic() - started < PROMPTLY
        tid = other.result("tpc_finish", 1)
        assert_unknown_oid(other, dead_oid)
        assert other.result("loadBefore", other_oid, MAXTID)[1] == tid
    server.assert_intact((tid,))


@pytest.mark.parametrize(
    "server", [{"transaction_timeout": 1}], indirect=True, ids=["timeout-1s"]
)
def test_transaction_timeout_drops_the_lock_holder(
    server: Server, no_fatal_errors: None
) -> None:
    with server.registered() as stalled, server.registered() as other:
        stalled_oid = _begin_and_store(stalled, "stalled")
        assert stalled.result("vote", 1) == ()
        locked_at = time.monotonic()
        other_oid = other.result("new_oids", 1)[0]
        other.call_async("tpc_begin", 1, b"", b"", {})
        other.call_async("storea", other_oid, Z64, record("alive"), 1)
        vote = other.send_call("vote", 1)
        # The stalled client never finishes: the server drops it after ~1 s.
        assert stalled.closed_by_server()
        assert time.monotonic() - locked_at >= 0.9
        event = other.next_event()
        assert isinstance(event, Reply), event
        assert event.msgid == vote
        tid = other.result("tpc_finish", 1)
        assert_unknown_oid(other, stalled_oid)
    server.assert_intact((tid,))


def test_zeo_client_commits_while_a_raw_client_holds_then_dies(
    server: Server, no_fatal_errors: None
) -> None:
    """A stock ZEO client's commit waits for a dead holder, then succeeds."""
    import threading

    storage = open_zeo(server.address)
    db = ZODB.DB(storage)
    try:
        with server.registered() as dead:
            dead_oid = _begin_and_store(dead, "dead")
            assert dead.result("vote", 1) == ()
            committed = threading.Event()
            errors: list[BaseException] = []

            def commit() -> None:
                try:
                    with db.transaction() as connection:
                        connection.root()["zeo"] = "committed"
                    committed.set()
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

            worker = threading.Thread(target=commit)
            worker.start()
            # Held by the (still connected) dead client: the ZEO commit waits.
            wait_until(
                lambda: server.bystander.result("server_status")["waiting"] == 1,
                "the ZEO commit to wait for the commit lock",
                timeout=PROMPTLY,
            )
            assert not committed.is_set()
        worker.join(PROMPTLY)
        assert not worker.is_alive(), "the ZEO commit did not complete"
        assert not errors, errors
        tid = storage.lastTransaction()
        with db.transaction() as connection:
            assert connection.root()["zeo"] == "committed"
        assert_unknown_oid(server.bystander, dead_oid)
    finally:
        db.close()
    server.assert_intact((tid,))


def test_a_tid_before_the_last_transaction_is_refused(
    server: Server, no_fatal_errors: None
) -> None:
    """``tpc_begin`` with a tid of the client's choosing (as copying
    transactions does) must go forward: an earlier one would commit out of
    order, and invalidations would go backwards."""
    with server.registered() as client:
        last = client.result("lastTransaction")
        oid = client.result("new_oids", 1)[0]
        client.call_async("tpc_begin", 1, "", "", {}, last, " ")
        client.call_async("storea", oid, Z64, record("back in time"), 1)
        event = client.call("vote", 1)
        assert isinstance(event, ErrorReply), event
        assert event.class_name == TRANSACTION_ERROR
        assert "is not after the last transaction" in str(event.payload)
        assert_unknown_oid(client, oid)
    server.assert_intact()


def test_an_abort_while_the_vote_waits_for_the_lock(
    server: Server, no_fatal_errors: None
) -> None:
    """The vote of a transaction aborted while it waited for the commit lock
    is answered with a transaction error saying so."""
    with server.registered() as holder, server.registered() as waiter:
        _begin_and_store(holder, "holder")
        assert holder.result("vote", 1) == ()
        oid = _begin_and_store(waiter, "waiter")
        vote = waiter.send_call("vote", 1)
        assert waiter.result("ping") is None  # the vote is waiting
        abort = waiter.send_call("tpc_abort", 1)
        answers = {}
        for _ in range(2):
            event = waiter.next_event()
            answers[event.msgid] = event
        assert isinstance(answers[vote], ErrorReply), answers
        assert answers[vote].class_name == TRANSACTION_ERROR
        assert "aborted while its vote waited" in str(answers[vote].payload)
        assert isinstance(answers[abort], Reply), answers
        assert holder.result("tpc_abort", 1) is None
        assert_unknown_oid(waiter, oid)
    server.assert_intact()
