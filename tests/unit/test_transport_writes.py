"""How the server hands replies to its transport when one received chunk
holds many pipelined calls: in order, all of them, and in writes of at most
``FLUSH_WRITES`` frames, so a burst of readahead loads is not held in
memory until the whole chunk is handled."""

from __future__ import annotations

import asyncio
from typing import Any

from ZODB.MappingStorage import MappingStorage
from ZODB.utils import maxtid, p64

from zodbserver.protocol import ClientConnection, ErrorReply, Reply
from zodbserver.server.settings import ServerSettings
from zodbserver.server.storage_server import StorageServer
from zodbserver.server.transport import FLUSH_WRITES, ServerProtocol


class FakeTransport:
    """Records what the protocol writes, one entry per write call."""

    def __init__(self) -> None:
        self.writes: list[list[bytes]] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append([data])

    def writelines(self, data: Any) -> None:
        self.writes.append(list(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 4242) if name == "peername" else default


async def pipelined_loads(calls: int) -> tuple[FakeTransport, list[Any]]:
    server = StorageServer({"1": MappingStorage()}, ServerSettings())
    server.attach(asyncio.get_running_loop())
    protocol = ServerProtocol(server, set())
    transport = FakeTransport()
    protocol.connection_made(transport)
    client = ClientConnection()
    (greeting,) = transport.writes.pop()
    client.receive_data(greeting)
    chunk = client.handshake() + client.call(1, "register", ("1", True))
    for msgid in range(2, calls + 2):  # the empty storage answers POSKeyError
        chunk += client.call(msgid, "loadBefore", (p64(0), maxtid))
    protocol.data_received(chunk)
    await asyncio.sleep(0)  # anything scheduled for later
    replies = [
        event.msgid
        for write in transport.writes
        for data in write
        for event in client.receive_data(data)
        if isinstance(event, Reply | ErrorReply)
    ]
    protocol.connection_lost(None)
    return transport, replies


def test_a_burst_of_calls_is_answered_in_order_in_bounded_writes() -> None:
    calls = 5 * FLUSH_WRITES + 3
    transport, replies = asyncio.run(pipelined_loads(calls))
    assert replies == list(range(1, calls + 2))
    assert len(transport.writes) >= calls // FLUSH_WRITES
    assert max(len(write) for write in transport.writes) <= FLUSH_WRITES
