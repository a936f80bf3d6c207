"""Servers that misbehave: garbage, a connection cut in the middle of a
reply, a storage name the server does not have.  Each gives the caller a
clear error within ``wait_timeout``, never a hang and never stale data."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from ZODB.Connection import TransactionMetaData
from ZODB.MappingStorage import MappingStorage
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle, zodb_unpickle
from ZODB.utils import z64

from support.waiting import wait_until
from zodbserver.client import ClientDisconnected, ClientStorage
from zodbserver.protocol import encode_frame
from zodbserver.server.thread import ServerThread


def store(client: ClientStorage, oid: bytes, serial: bytes, value: Any) -> bytes:
    txn = TransactionMetaData()
    client.tpc_begin(txn)
    client.store(oid, serial, zodb_pickle(MinPO(value)), "", txn)
    client.tpc_vote(txn)
    return client.tpc_finish(txn)


WAIT = 2.0
#: How much later than wait_timeout a failure may come (a slow machine).
SLACK = 5.0


class GarbageServer:
    """Greets like a ZEO server, then sends garbage to every client."""

    def __init__(self, garbage: bytes) -> None:
        self.garbage = garbage
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[:2]
        self.accepted = 0
        self.listener.settimeout(0.1)  # close() cannot interrupt accept()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            with sock:
                try:
                    sock.sendall(encode_frame(b"M5") + self.garbage)
                    sock.settimeout(0.5)
                    while sock.recv(65536):
                        pass
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT + SLACK)
        self.listener.close()


@pytest.mark.parametrize(
    "garbage",
    [
        encode_frame(b"\xc1\xc1 not msgpack"),
        encode_frame(b"\x94\x01\x00"),  # a truncated 4-array
        b"\xff\xff\xff\xff" + b"x" * 100,  # a frame of 4 GiB announced
    ],
    ids=["undecodable", "truncated", "huge-frame"],
)
def test_a_server_sending_garbage_gives_client_disconnected(garbage: bytes) -> None:
    server = GarbageServer(garbage)
    started = time.monotonic()
    try:
        with pytest.raises(ClientDisconnected, match=r"sent bad data|lost|timed out"):
            ClientStorage(server.address, wait_timeout=WAIT)
        assert time.monotonic() - started < WAIT + SLACK
    finally:
        server.close()
    assert server.accepted >= 1


def test_an_unknown_storage_name_is_named_in_the_error() -> None:
    with ServerThread({"1": MappingStorage()}) as address:
        started = time.monotonic()
        with pytest.raises(ClientDisconnected, match="unknown storage: nope"):
            ClientStorage(address, storage="nope", wait_timeout=WAIT)
        assert time.monotonic() - started < WAIT + SLACK


class CuttingProxy:
    """Forwards to a server; ``cut()`` breaks the next server-to-client
    chunk in two and drops the connection after its first half."""

    def __init__(self, upstream: Any) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[:2]
        self.cut_next = threading.Event()
        self.was_cut = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def cut(self) -> None:
        self.was_cut.clear()
        self.cut_next.set()

    def _serve(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self._sockets += [downstream, upstream]
            threading.Thread(
                target=self._pump, args=(upstream, downstream, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(downstream, upstream, False), daemon=True
            ).start()

    def _pump(
        self, source: socket.socket, target: socket.socket, replies: bool
    ) -> None:
        try:
            while data := source.recv(65536):
                if replies and self.cut_next.is_set() and len(data) > 1:
                    self.cut_next.clear()
                    target.sendall(data[: len(data) // 2])
                    # Before the shutdown: the client may check it as soon
                    # as it sees the connection go.
                    self.was_cut.set()
                    for sock in (source, target):
                        sock.shutdown(socket.SHUT_RDWR)
                    return
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        for sock in self._sockets:
            sock.close()


@pytest.fixture
def proxied() -> Iterator[tuple[CuttingProxy, Any]]:
    with ServerThread({"1": MappingStorage()}) as address:
        proxy = CuttingProxy(address)
        try:
            yield proxy, address
        finally:
            proxy.close()


def test_a_reply_cut_in_half_fails_the_call_then_the_client_recovers(
    proxied: tuple[CuttingProxy, Any],
) -> None:
    proxy, address = proxied
    client = ClientStorage(proxy.address, wait_timeout=10)
    writer = ClientStorage(address, wait_timeout=10)
    try:
        oid = client.new_oid()
        first = store(client, oid, z64, "first")
        # Another client replaces the object; ours loads it through the
        # proxy, which cuts that reply in half.
        second = store(writer, oid, first, "second" * 1000)
        wait_until(lambda: client.lastTransaction() == second, "the invalidation")
        proxy.cut()  # the next bytes from the server are the load's reply
        with pytest.raises(ClientDisconnected):
            client.load(oid)
        assert proxy.was_cut.is_set()
        # The client reconnects by itself and reads the current revision.
        assert client.wait_until_connected(10)
        data, serial = client.load(oid)
        assert serial == second
        assert zodb_unpickle(data) == MinPO("second" * 1000)
        assert data == zodb_pickle(MinPO("second" * 1000))
    finally:
        client.close()
        writer.close()
