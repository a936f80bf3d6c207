"""A server that delivers another client's invalidation after the reply to
our own later commit (ZEO 6's threaded server can) must not cost us the
connection."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ZODB.utils import p64

from zodbserver.client import ClientStorage

from .fake_server import FakeServer


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def test_an_older_invalidation_is_applied_without_moving_back(fake: FakeServer) -> None:
    client = ClientStorage(fake.addr, wait_timeout=10, server_sync=True)
    try:
        fake.push("invalidateTransaction", p64(10), [p64(1)])
        client.sync()  # a ping: the invalidation is processed before its reply
        assert client.lastTransaction() == p64(10)
        fake.push("invalidateTransaction", p64(5), [p64(2)])
        client.sync()
        assert client.is_connected()
        assert client.lastTransaction() == p64(10)
        fake.push("invalidateTransaction", p64(11), [p64(3)])
        client.sync()
        assert client.lastTransaction() == p64(11)
    finally:
        client.close()
