"""Wire-level behaviour against a scripted server and in isolation."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from ZODB import POSException
from ZODB.utils import p64, z64

from zodbserver.client import ClientDisconnected, ClientStorage, ServerException
from zodbserver.client.codec import exception_global
from zodbserver.client.exceptions import exception_from_reply
from zodbserver.client.storage import normalize_addresses
from zodbserver.errors import ConfigurationError, RemoteProtocolError
from zodbserver.protocol import Codec

from .fake_server import FakeServer


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture
def clients() -> Iterator[Any]:
    opened: list[ClientStorage] = []

    def make(addr: Any, **options: Any) -> ClientStorage:
        options.setdefault("wait_timeout", 5)
        client = ClientStorage(addr, **options)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


def test_normalize_addresses() -> None:
    assert normalize_addresses(8100) == [("127.0.0.1", 8100)]
    assert normalize_addresses("example.org:8100") == [("example.org", 8100)]
    assert normalize_addresses("[::1]:8100") == [("::1", 8100)]
    assert normalize_addresses(("h", 1)) == [("h", 1)]
    assert normalize_addresses("/var/zeo.sock") == ["/var/zeo.sock"]
    assert normalize_addresses([8100, "h:2", "/s"]) == [
        ("127.0.0.1", 8100),
        ("h", 2),
        "/s",
    ]
    with pytest.raises(ConfigurationError):
        normalize_addresses(1.5)


def test_error_replies_become_the_exceptions_zodb_knows() -> None:
    conflict = exception_from_reply(
        "ZODB.POSException.ConflictError",
        {"message": "m", "oid": p64(1), "serials": (p64(3), p64(2))},
    )
    assert isinstance(conflict, POSException.ConflictError)
    assert conflict.oid == p64(1)
    assert conflict.serials == (p64(3), p64(2))
    key = exception_from_reply("ZODB.POSException.POSKeyError", (p64(1),))
    assert isinstance(key, POSException.POSKeyError)
    undo = exception_from_reply(
        "ZODB.POSException.MultipleUndoErrors",
        {"_errs": ((p64(2), ("ZODB.POSException.UndoError", {"_reason": "r"})),)},
    )
    assert isinstance(undo, POSException.MultipleUndoErrors)
    [(oid, nested)] = undo._errs
    assert oid == p64(2)
    assert isinstance(nested, POSException.UndoError)
    unknown = exception_from_reply("os.system", ("rm -rf /",))
    assert isinstance(unknown, ServerException)
    assert unknown.args == ("os.system", ("rm -rf /",))


def test_pickle_codec_admits_exceptions_and_nothing_else() -> None:
    codec = Codec(b"Z", exception_global)
    errors = POSException.MultipleUndoErrors([(p64(1), POSException.UndoError("no"))])
    message = pickle.dumps((1, 2, ".reply", ("x", errors.__dict__)), 3)
    (_, _, _, (_, payload)) = codec.decode(message)
    [(oid, error)] = payload["_errs"]
    assert isinstance(error, POSException.UndoError)
    assert oid == p64(1)
    with pytest.raises(RemoteProtocolError):
        codec.decode(pickle.dumps((1, 0, ".reply", (ClientStorage,)), 3))
    with pytest.raises(RemoteProtocolError):
        codec.decode(b"\x80\x03cos\nsystem\nX\x02\x00\x00\x00lsq\x00\x85R.")


def test_heartbeats_are_sent(fake: FakeServer, clients: Any) -> None:
    clients(fake.addr, heartbeat_interval=0.05)
    assert fake.heartbeats.acquire(timeout=5)
    assert fake.heartbeats.acquire(timeout=5)


def test_load_before_uses_oid_and_tid_as_msgid(fake: FakeServer, clients: Any) -> None:
    fake.handlers["loadBefore"] = lambda oid, before: (b"data", p64(1), None)
    client = clients(fake.addr)
    assert client.loadBefore(p64(7), p64(9)) == (b"data", p64(1), None)
    [call] = [call for call in fake.calls if call.method == "loadBefore"]
    assert call.msgid == (p64(7), p64(9))
    assert client.loadBefore(p64(7), p64(5)) == (b"data", p64(1), None)  # cached


def test_register_then_get_info_in_order(fake: FakeServer, clients: Any) -> None:
    client = clients(fake.addr, client_label="app-1")
    client.ping()  # the server handles frames in order: the label came first
    assert [call.method for call in fake.calls[:2]] == ["register", "get_info"]
    assert fake.calls[0].args == ("1", False)
    assert [c.method for c in fake.async_calls] == ["set_client_label"]


def test_register_none_asks_for_last_transaction(
    fake: FakeServer, clients: Any
) -> None:
    fake.handlers["register"] = lambda storage, read_only: None
    fake.handlers["lastTransaction"] = lambda: p64(42)
    client = clients(fake.addr)
    assert client.lastTransaction() == p64(42)


def test_invalidations_move_last_transaction(fake: FakeServer, clients: Any) -> None:
    fake.handlers["loadBefore"] = lambda oid, before: (b"v1", p64(1), None)
    client = clients(fake.addr)
    assert client.load(p64(3)) == (b"v1", p64(1))
    fake.push("invalidateTransaction", p64(5), [p64(3)])
    client.ping()  # replies come after the async call sent before them
    assert client.lastTransaction() == p64(5)
    fake.handlers["loadBefore"] = lambda oid, before: (b"v2", p64(5), None)
    assert client.load(p64(3)) == (b"v2", p64(5))
    assert client.loadBefore(p64(3), p64(5)) == (b"v1", p64(1), p64(5))


def test_info_messages_update_size_and_length(fake: FakeServer, clients: Any) -> None:
    client = clients(fake.addr)
    fake.push("info", {"length": 12, "size": 3456})
    client.ping()
    assert (len(client), client.getSize()) == (12, 3456)


def test_unknown_client_method_drops_the_connection(
    fake: FakeServer, clients: Any
) -> None:
    client = clients(fake.addr, min_disconnect_poll=0.05)
    assert fake.connections.acquire(timeout=5)
    fake.push("eval", "1+1")
    assert client.wait_until_disconnected(5)
    assert fake.connections.acquire(timeout=5)  # and it comes back
    assert client.wait_until_connected(5)


def test_unsupported_protocol_is_refused(clients: Any) -> None:
    server = FakeServer(announce=b"M4")
    try:
        with pytest.raises(ClientDisconnected):
            clients(server.addr, wait_timeout=0.5)
    finally:
        server.close()


def test_server_errors_reach_the_caller(fake: FakeServer, clients: Any) -> None:
    def missing(oid: bytes, before: bytes) -> None:
        raise POSException.POSKeyError(oid)

    fake.handlers["loadBefore"] = missing
    fake.handlers["server_status"] = lambda: 1 / 0
    client = clients(fake.addr)
    with pytest.raises(POSException.POSKeyError):
        client.load(p64(1))
    with pytest.raises(ServerException):
        client.server_status()
    assert client.is_connected()
    assert client.lastTransaction() == z64
