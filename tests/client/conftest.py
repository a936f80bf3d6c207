"""Fixtures for the client tests: a server under test, and clients of it.

``start_server`` is parametrised over ``servers.SERVERS``; it returns a
function that starts a server on a FileStorage in the test's temp dir and
stops every server it started at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from zodbserver.client import ClientStorage

from .servers import BLOB_SERVERS, SERVERS, ServerStarter


class ServerHandle:
    """One running server, restartable on the same port."""

    def __init__(self, start: Callable[..., Any], path: str, **options: Any) -> None:
        self._start = start
        self.path = path
        self.options = options
        self.addr, self._stop = start(path, **options)
        self.running = True

    @property
    def port(self) -> int | str:
        return self.addr if isinstance(self.addr, str) else int(self.addr[1])

    def stop(self) -> None:
        if self.running:
            self.running = False
            self._stop()

    def restart(self) -> None:
        self.stop()
        self.addr, self._stop = self._start(self.path, port=self.port, **self.options)
        self.running = True


def _starting(
    starter: ServerStarter, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., ServerHandle]]:
    monkeypatch.chdir(tmp_path)  # ZEO writes its config file into the cwd
    handles: list[ServerHandle] = []

    def start(name: str = "Data.fs", **options: Any) -> ServerHandle:
        handle = ServerHandle(starter, str(tmp_path / name), **options)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.stop()


@pytest.fixture(params=sorted(SERVERS))
def start_server(
    request: pytest.FixtureRequest,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., ServerHandle]]:
    yield from _starting(SERVERS[request.param], tmp_path, monkeypatch)


@pytest.fixture(params=sorted(BLOB_SERVERS))
def start_blob_server(
    request: pytest.FixtureRequest,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., ServerHandle]]:
    yield from _starting(BLOB_SERVERS[request.param], tmp_path, monkeypatch)


@pytest.fixture
def server(start_server: Callable[..., ServerHandle]) -> ServerHandle:
    return start_server()


@pytest.fixture
def make_client(
    server: ServerHandle,
) -> Iterator[Callable[..., ClientStorage]]:
    clients: list[ClientStorage] = []

    def make(addr: Any = None, **options: Any) -> ClientStorage:
        options.setdefault("wait_timeout", 10)
        client = ClientStorage(server.addr if addr is None else addr, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
