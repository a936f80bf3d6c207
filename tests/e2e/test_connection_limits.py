"""Limits that protect every client from one: a connection's unsent replies,
clients that never register or never read, ``max-connections``, running out
of file descriptors, and floods of connections that come and go.

Memory and file descriptors are read from the server process's ``/proc``
entries; the other limits are checked on a server thread, whose log and
counters the test reads.
"""

from __future__ import annotations

import os
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZEO.ClientStorage import ClientStorage
from ZODB.FileStorage import FileStorage

from support.monitoring import LOCAL, Scrape
from support.raw_client import PROMPTLY, RawClient
from support.server_processes import ServerProcess
from support.waiting import wait_until
from zodbserver.protocol import Reply
from zodbserver.server.monitor import Monitor
from zodbserver.server.settings import ServerSettings
from zodbserver.server.thread import ServerThread

MAXTID = b"\x7f" + b"\xff" * 7
OBJECT_SIZE = 100_000


def commit_big_object(address: object) -> bytes:
    """One object of OBJECT_SIZE random bytes; its oid."""
    db = ZODB.DB(ClientStorage(address, wait_timeout=PROMPTLY))
    try:
        with db.transaction() as connection:
            big = PersistentMapping(payload=os.urandom(OBJECT_SIZE))
            connection.root()["big"] = big
    finally:
        db.close()
        transaction.abort()
    oid = big._p_oid
    assert isinstance(oid, bytes)
    return oid


def registered(address: object) -> RawClient:
    client = RawClient(address)
    try:
        client.result("register", "1", False)
    except BaseException:
        client.close()
        raise
    return client


# -- a client that pipelines calls and never reads its replies ---------------


def test_a_client_that_does_not_read_cannot_grow_the_server(tmp_path: Path) -> None:
    calls = 2000
    with ServerProcess(
        "ours", tmp_path, zeo_lines=("connection-buffer-limit 1MB",)
    ) as server:
        address = server.start()
        oid = commit_big_object(address)
        hog = registered(address)
        hog.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        before = server.proc_status("VmRSS")
        # Every call answered would be 2000 * 100 KB = 200 MB of replies.
        batch = b"".join(
            hog.connection.call(msgid, "loadBefore", (oid, MAXTID))
            for msgid in range(1000, 1000 + calls)
        )
        hog.sock.sendall(batch)
        time.sleep(1.0)  # the server answers what it read, then stops reading
        grown_mb = (server.proc_status("VmRSS") - before) / 1024

        # Meanwhile everyone else is served.
        with registered(address) as bystander:
            data, _serial, _end = bystander.result("loadBefore", oid, MAXTID)
            assert len(data) > OBJECT_SIZE

        # Once the hog reads, it gets every reply, in order.
        replies = []
        while len(replies) < calls:
            event = hog.next_event()
            assert isinstance(event, Reply), event
            replies.append(event.msgid)
        assert replies == list(range(1000, 1000 + calls))
        hog.close()
    assert grown_mb < 32, f"the server grew by {grown_mb:.0f} MB"


# -- timeouts and limits, on a server thread ---------------------------------


class Limited:
    """A server thread with small limits and a monitor to read its counters."""

    def __init__(self, tmp_path: Path, **settings: object) -> None:
        self.monitor = Monitor(LOCAL)
        monitor = self.monitor.start()
        assert isinstance(monitor, tuple)
        self.monitor_address = monitor
        storage = FileStorage(str(tmp_path / "Data.fs"))
        self.thread = ServerThread(
            {"1": storage},
            ServerSettings(address=LOCAL, **settings),  # type: ignore[arg-type]
            monitor=self.monitor,
        )
        self.address = self.thread.start()

    def counter(self, name: str, **labels: str) -> float:
        return Scrape(self.monitor_address).value(name, default=0, **labels)

    def close(self) -> None:
        self.thread.stop()
        self.monitor.close()


@pytest.fixture
def limited(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Limited]:
    server = Limited(tmp_path, **request.param)
    yield server
    server.close()


@pytest.mark.parametrize(
    "limited",
    [{"slow_client_timeout": 1.0, "connection_buffer_limit": 64 * 1024}],
    indirect=True,
)
def test_a_client_over_its_buffer_too_long_is_closed(
    limited: Limited, caplog: pytest.LogCaptureFixture
) -> None:
    oid = commit_big_object(limited.address)
    with registered(limited.address) as hog:
        hog.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        hog.sock.sendall(
            b"".join(
                hog.connection.call(msgid, "loadBefore", (oid, MAXTID))
                for msgid in range(100, 400)
            )
        )
        wait_until(
            lambda: "has not read its replies for 1 s" in caplog.text,
            "the slow client to be closed",
        )
        assert hog.closed_by_server()
    assert (
        limited.counter("zodbserver_connections_closed_total", reason="slow_client")
        == 1
    )


@pytest.mark.parametrize("limited", [{"register_timeout": 0.5}], indirect=True)
def test_a_connection_that_never_registers_is_closed(
    limited: Limited, caplog: pytest.LogCaptureFixture
) -> None:
    with registered(limited.address) as patient, RawClient(limited.address) as idle:
        assert idle.closed_by_server()
        assert "did not register within 0.5 s" in caplog.text
        time.sleep(0.6)
        assert patient.result("lastTransaction")  # still served
    reason = "register_timeout"
    assert limited.counter("zodbserver_connections_closed_total", reason=reason) == 1


@pytest.mark.parametrize("limited", [{"max_connections": 2}], indirect=True)
def test_max_connections_refuses_more(
    limited: Limited, caplog: pytest.LogCaptureFixture
) -> None:
    first = registered(limited.address)
    with registered(limited.address) as second:
        with socket.create_connection(limited.address, timeout=PROMPTLY) as third:
            assert third.recv(100) == b""  # closed, no greeting
        assert "refused: max-connections (2) are open" in caplog.text
        assert second.result("lastTransaction")
        first.close()
        # The server sees the close, then has room again.
        wait_until(lambda: can_register(limited.address), "room for a client")
    refused = limited.counter(
        "zodbserver_connections_refused_total", reason="max_connections"
    )
    assert refused >= 1


def can_register(address: object) -> bool:
    """Whether a new client gets to register (it then leaves)."""
    try:
        registered(address).close()
    except (AssertionError, OSError):
        return False  # refused
    return True


# -- out of file descriptors ---------------------------------------------------


def test_running_out_of_file_descriptors_is_survived(tmp_path: Path) -> None:
    with ServerProcess("ours", tmp_path) as server:
        address = server.start()
        with registered(address) as survivor:
            limit = server.open_fds() + 20
            resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (limit, limit))
            extra = []
            try:
                for _ in range(60):  # more than the server can accept
                    extra.append(socket.create_connection(address, timeout=PROMPTLY))
                time.sleep(1.0)
                assert server.running
                assert survivor.result("lastTransaction")  # served meanwhile
            finally:
                for sock in extra:
                    sock.close()
            # Room again: new clients are accepted (the server retries).
            wait_until(
                lambda: can_register(address),
                "a new client accepted once descriptors are free",
                timeout=30,
            )
            assert survivor.result("lastTransaction")
        assert server.running


# -- a flood of connections ------------------------------------------------------


def test_a_flood_of_connections_leaves_nothing_behind(tmp_path: Path) -> None:
    with ServerProcess("ours", tmp_path) as server:
        address = server.start()
        for _ in range(50):  # warm up: allocations made once
            registered(address).close()
        fds_before = server.open_fds()
        rss_before = server.proc_status("VmRSS")
        for round_ in range(1500):
            if round_ % 3 == 0:
                socket.create_connection(address, timeout=PROMPTLY).close()
            elif round_ % 3 == 1:
                RawClient(address).close()  # handshake, no register
            else:
                client = registered(address)
                client.send_call("lastTransaction")
                client.close()  # without reading the answer
        wait_until(
            lambda: server.open_fds() <= fds_before, "the server's descriptors freed"
        )
        rss_growth_mb = (server.proc_status("VmRSS") - rss_before) / 1024
        assert rss_growth_mb < 16, f"grew by {rss_growth_mb:.1f} MB"
        assert server.running
