"""Losing the server, finding it again, and what the cache does meanwhile."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from ZODB import POSException
from ZODB.Connection import TransactionMetaData
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle, zodb_unpickle
from ZODB.utils import z64

from support.waiting import wait_until
from zodbserver.client import ClientDisconnected, ClientStorage

from .conftest import ServerHandle
from .test_client_server import RecordingDB, store

FAST = dict(wait_timeout=10, min_disconnect_poll=0.05, max_disconnect_poll=0.2)


@pytest.fixture
def clients() -> Any:
    opened: list[ClientStorage] = []

    def make(addr: Any, **options: Any) -> ClientStorage:
        client = ClientStorage(addr, **{**FAST, **options})
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


Clients = Callable[..., ClientStorage]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_client_disconnected_is_what_zodb_apps_catch() -> None:
    import transaction.interfaces

    from zodbserver.errors import ZodbServerError

    assert issubclass(ClientDisconnected, POSException.StorageError)
    assert issubclass(ClientDisconnected, transaction.interfaces.TransientError)
    assert issubclass(ClientDisconnected, ZodbServerError)


def test_no_server_means_client_disconnected_after_wait_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(ClientDisconnected):
        ClientStorage(("127.0.0.1", free_port()), wait_timeout=0.3)
    assert time.monotonic() - started < 5


def test_wait_false_returns_at_once_and_calls_fail(clients: Clients) -> None:
    client = clients(("127.0.0.1", free_port()), wait=False, wait_timeout=0.2)
    assert not client.is_connected()
    assert "disconnected" in client.getName()
    with pytest.raises(ClientDisconnected):
        client.load(z64)
    with pytest.raises(ClientDisconnected):
        client.tpc_begin(TransactionMetaData())
    with pytest.raises(ClientDisconnected):
        client.sortKey()


@pytest.fixture
def process_server(start_server: Callable[..., ServerHandle]) -> ServerHandle:
    return start_server(process=True)


def test_stopped_server_gives_client_disconnected_then_reconnects(
    process_server: ServerHandle, clients: Clients
) -> None:
    server = process_server
    client = clients(server.addr, wait_timeout=0.3)
    oid = client.new_oid()
    tid = store(client, oid, z64, "kept")
    server.stop()
    assert client.wait_until_disconnected(10)
    assert not client.is_connected()
    # cached data stays readable; everything else fails promptly
    assert client.load(oid) == (zodb_pickle(MinPO("kept")), tid)
    started = time.monotonic()
    with pytest.raises(ClientDisconnected):
        client.load(b"\0" * 7 + b"\x09")
    assert time.monotonic() - started < 5
    with pytest.raises(ClientDisconnected):
        client.tpc_begin(TransactionMetaData())
    with pytest.raises(ClientDisconnected):
        client.ping()

    server.restart()
    assert client.wait_until_connected(10)
    assert client.verify_result == "cache up to date"
    second = store(client, oid, tid, "again")
    assert client.load(oid) == (zodb_pickle(MinPO("again")), second)


def test_sync_call_waits_for_reconnect_within_wait_timeout(
    process_server: ServerHandle, clients: Clients
) -> None:
    server = process_server
    client = clients(server.addr, wait_timeout=30)
    server.stop()
    assert client.wait_until_disconnected(10)
    server.restart()
    client.ping()  # waits for the reconnect instead of failing
    assert client.is_connected()


def test_tpc_begin_waits_for_the_server_to_come_back(
    process_server: ServerHandle, clients: Clients
) -> None:
    """A commit during a restart is a pause, not an error (as with ZEO)."""
    server = process_server
    client = clients(server.addr, wait_timeout=30)
    oid = client.new_oid()
    server.stop()
    assert client.wait_until_disconnected(10)
    outcome: list[Any] = []

    def commit() -> None:
        try:
            outcome.append(store(client, oid, z64, "after the restart"))
        except Exception as exc:
            outcome.append(exc)

    writer = threading.Thread(target=commit)
    writer.start()
    writer.join(0.5)
    assert outcome == []  # waiting, not failed
    server.restart()
    writer.join(30)
    assert not writer.is_alive()
    (tid,) = outcome
    assert isinstance(tid, bytes), tid
    assert client.load(oid) == (zodb_pickle(MinPO("after the restart")), tid)


def test_tpc_begin_gives_up_after_wait_timeout(
    process_server: ServerHandle, clients: Clients
) -> None:
    server = process_server
    client = clients(server.addr, wait_timeout=1.0)
    server.stop()
    assert client.wait_until_disconnected(10)
    started = time.monotonic()
    with pytest.raises(ClientDisconnected, match="timed out waiting"):
        client.tpc_begin(TransactionMetaData())
    assert time.monotonic() - started >= 0.9  # it did wait
    server.restart()
    assert client.wait_until_connected(10)
    store(client, client.new_oid(), z64, "the lock was released")


def test_transaction_in_progress_fails_cleanly_on_disconnect(
    process_server: ServerHandle, clients: Clients
) -> None:
    server = process_server
    client = clients(server.addr)
    oid = client.new_oid()
    txn = TransactionMetaData()
    client.tpc_begin(txn)
    client.store(oid, z64, zodb_pickle(MinPO(1)), "", txn)
    server.stop()
    assert client.wait_until_disconnected(10)
    server.restart()
    assert client.wait_until_connected(10)
    with pytest.raises(ClientDisconnected):
        client.store(oid, z64, zodb_pickle(MinPO(2)), "", txn)
    with pytest.raises(ClientDisconnected):
        client.tpc_vote(txn)
    client.tpc_abort(txn)
    tid = store(client, oid, z64, 3)  # the lock was released; a new one works
    assert client.load(oid)[1] == tid


def _miss_commits(
    start_server: Callable[..., ServerHandle],
    clients: Clients,
    missed: int = 1,
    **server_options: Any,
) -> tuple[ClientStorage, RecordingDB, bytes, bytes]:
    """A client whose server goes away while another server commits."""
    server = start_server(process=True, **server_options)
    client = clients(server.addr)
    db = RecordingDB()
    client.registerDB(db)
    oid = client.new_oid()
    first = store(client, oid, z64, "old")
    assert client.load(oid)[1] == first
    server.stop()
    assert client.wait_until_disconnected(10)
    # Same Data.fs, another port the first client does not know about.
    other = ServerHandle(server._start, server.path, process=True, **server_options)
    try:
        writer = clients(other.addr)
        second = first
        for _ in range(missed):
            second = store(writer, oid, second, "new")
        writer.close()
    finally:
        other.stop()
    connects = db.cache_invalidations
    server.restart()
    assert client.wait_until_connected(10)
    assert db.cache_invalidations > connects
    return client, db, oid, second


def test_reconnect_with_quick_verification(
    start_server: Callable[..., ServerHandle], clients: Clients
) -> None:
    client, db, oid, second = _miss_commits(start_server, clients)
    assert client.verify_result == "quick verification"
    assert any(oid in oids for _, oids in db.invalidations)
    assert client.lastTransaction() == second
    data, serial = client.load(oid)
    assert (zodb_unpickle(data), serial) == (MinPO("new"), second)


def test_reconnect_with_a_cache_too_old_drops_it(
    start_server: Callable[..., ServerHandle], clients: Clients
) -> None:
    client, _db, oid, second = _miss_commits(
        start_server, clients, missed=2, invalidation_queue_size=1
    )
    assert client.verify_result == "cache too old, clearing"
    assert client.lastTransaction() == second
    data, serial = client.load(oid)
    assert (zodb_unpickle(data), serial) == (MinPO("new"), second)


def test_first_reachable_address_wins(server: ServerHandle, clients: Clients) -> None:
    dead = ("127.0.0.1", free_port())
    client = clients([dead, server.addr])
    assert client.is_connected()
    assert client.sortKey() == f"1:{(server.addr[0], server.addr[1])}"


def test_address_forms(server: ServerHandle, clients: Clients) -> None:
    host, port = server.addr
    for addr in (port, f"{host}:{port}", (host, port)):
        client = clients(addr)
        assert client.is_connected()
        client.close()


def test_unix_socket(
    start_server: Callable[..., ServerHandle], clients: Clients, tmp_path: Any
) -> None:
    path = str(tmp_path / "zeo.sock")
    server = start_server(port=path)
    assert server.addr == path
    client = clients(path)
    oid = client.new_oid()
    tid = store(client, oid, z64, 1)
    assert client.load(oid)[1] == tid


def test_read_only_server_refuses_a_writable_client(
    start_server: Callable[..., ServerHandle],
) -> None:
    server = start_server(read_only=True)
    with pytest.raises(ClientDisconnected):
        ClientStorage(server.addr, wait_timeout=0.5)


def test_read_only_client(server: ServerHandle, clients: Clients) -> None:
    client = clients(server.addr, read_only=True)
    assert client.isReadOnly()
    with pytest.raises(POSException.ReadOnlyError):
        client.new_oid()
    with pytest.raises(POSException.ReadOnlyError):
        client.tpc_begin(TransactionMetaData())


def test_read_only_fallback_then_upgrade_to_writable(
    start_server: Callable[..., ServerHandle], clients: Clients
) -> None:
    read_only = start_server("ro.fs", read_only=True, process=True)
    writable = start_server("rw.fs", process=True)
    writable.stop()  # its port is where the writable server will appear
    client = clients(
        [read_only.addr, writable.addr], read_only_fallback=True, wait_timeout=10
    )
    assert client.isReadOnly()
    with pytest.raises(POSException.ReadOnlyError):
        client.new_oid()
    writable.restart()
    # The switch can be too quick to observe a disconnected moment: wait
    # (bounded) for the client to be writable instead.
    wait_until(lambda: not client.isReadOnly(), "the writable server", timeout=10)
    assert client.wait_until_connected(10)
    assert not client.isReadOnly()
    oid = client.new_oid()
    tid = store(client, oid, z64, 1)
    assert client.load(oid)[1] == tid
