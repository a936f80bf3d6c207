"""How the server hands replies to its transport when one received chunk
holds many pipelined calls: in order, all of them, and in writes of at most
``FLUSH_WRITES`` frames, so a burst of readahead loads is not held in
memory until the whole chunk is handled; and once the transport's buffer
passes its limit, the rest of the chunk waits until the buffer drains."""

from __future__ import annotations

import asyncio
from typing import Any

import ZODB
from ZODB.MappingStorage import MappingStorage
from ZODB.utils import maxtid, p64

from zodbserver.protocol import ClientConnection, ErrorReply, Reply
from zodbserver.server.settings import ServerSettings
from zodbserver.server.storage_server import StorageServer
from zodbserver.server.transport import (
    FLUSH_BYTES,
    FLUSH_WRITES,
    HARD_LIMIT_FACTOR,
    HARD_LIMIT_FLOOR,
    ServerProtocol,
)


class FakeTransport:
    """Records what the protocol writes, one entry per write call, and
    buffers it as asyncio's transports do: past the high-water mark it
    pauses the protocol's writing, and ``drain`` resumes it."""

    def __init__(self) -> None:
        self.writes: list[list[bytes]] = []
        self.closed = False
        self.protocol: ServerProtocol | None = None
        self.high = self.low = 0
        self.buffered = 0
        self.most_buffered = 0
        self.paused = False
        self.reading = True

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        self.high, self.low = high, low

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes) -> None:
        self.writelines([data])

    def writelines(self, data: Any) -> None:
        frames = list(data)
        self.writes.append(frames)
        self.buffered += sum(len(frame) for frame in frames)
        self.most_buffered = max(self.most_buffered, self.buffered)
        if self.buffered > self.high and not self.paused and self.protocol:
            self.paused = True
            self.protocol.pause_writing()

    def drain(self) -> None:
        """The client read everything sent so far."""
        self.buffered = 0
        if self.paused and self.protocol:
            self.paused = False
            self.protocol.resume_writing()

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 4242) if name == "peername" else default


def connect(
    server: StorageServer, *, paced: bool = True
) -> tuple[ServerProtocol, FakeTransport, ClientConnection]:
    """A connection to ``server`` over a fake transport, its greeting read
    by the client; ``paced``: the transport tells the protocol when its
    buffer passes the limit."""
    protocol = ServerProtocol(server, set())
    transport = FakeTransport()
    if paced:
        transport.protocol = protocol
    protocol.connection_made(transport)
    client = ClientConnection()
    (greeting,) = transport.writes.pop()
    client.receive_data(greeting)
    return protocol, transport, client


async def pipelined_loads(calls: int) -> tuple[FakeTransport, list[Any]]:
    server = StorageServer({"1": MappingStorage()}, ServerSettings())
    server.attach(asyncio.get_running_loop())
    protocol, transport, client = connect(server, paced=False)
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


OBJECT = b"x" * 100_000


async def pipelined_big_loads(
    calls: int, limit: int
) -> tuple[FakeTransport, list[Any]]:
    storage = MappingStorage()
    db = ZODB.DB(storage)
    with db.transaction() as connection:
        connection.root()["big"] = OBJECT
    server = StorageServer(
        {"1": storage}, ServerSettings(connection_buffer_limit=limit)
    )
    server.attach(asyncio.get_running_loop())
    protocol, transport, client = connect(server)
    chunk = client.handshake() + client.call(1, "register", ("1", True))
    for msgid in range(2, calls + 2):
        chunk += client.call(msgid, "loadBefore", (p64(0), maxtid))
    protocol.data_received(chunk)
    assert not transport.reading  # paused with most calls unanswered
    answered_at_pause = sum(len(write) for write in transport.writes)
    assert answered_at_pause < calls // 2
    while protocol._backlog is not None or transport.paused:
        transport.drain()
    assert transport.reading
    await asyncio.sleep(0)
    replies = [
        event.msgid
        for write in transport.writes
        for data in write
        for event in client.receive_data(data)
        if isinstance(event, Reply | ErrorReply)
    ]
    protocol.connection_lost(None)
    db.close()
    return transport, replies


def test_calls_past_the_buffer_limit_wait_until_it_drains() -> None:
    calls, limit = 200, 1024 * 1024
    transport, replies = asyncio.run(pipelined_big_loads(calls, limit))
    assert replies == list(range(1, calls + 2))  # all answered, in order
    # At most a batch of replies past the limit (FLUSH_BYTES, one reply).
    assert transport.most_buffered <= limit + FLUSH_BYTES + 2 * len(OBJECT)


def test_a_client_that_reads_nothing_while_invalidations_pile_up_is_closed() -> None:
    """Reading stops at the buffer limit, but invalidations of others'
    commits keep coming: once HARD_LIMIT_FACTOR times the limit has been
    written since, the client is closed, so they cannot grow the server
    without bound."""

    async def scenario() -> tuple[FakeTransport, StorageServer, int]:
        limit = 64 * 1024
        server = StorageServer(
            {"1": MappingStorage()}, ServerSettings(connection_buffer_limit=limit)
        )
        server.attach(asyncio.get_running_loop())
        protocol, transport, client = connect(server)
        protocol.data_received(
            client.handshake() + client.call(1, "register", ("1", True))
        )
        oids = [p64(n) for n in range(10_000)]  # about 90 KB an invalidation
        sent = 0
        while not transport.closed and sent < 1000:
            sent += 1
            protocol.session.invalidate(p64(10**6 + sent), oids)
            await asyncio.sleep(0)  # the batch is flushed
        protocol.connection_lost(None)
        return transport, server, limit

    transport, server, limit = asyncio.run(scenario())
    assert transport.closed
    assert transport.paused
    hard = max(limit * HARD_LIMIT_FACTOR, HARD_LIMIT_FLOOR)
    assert hard < transport.most_buffered
    # What was buffered when reading paused, and the hard limit's worth more.
    assert transport.most_buffered < limit + hard + 256 * 1024
    assert server.traffic.closed["slow_client"] == 1


def test_a_commit_is_encoded_once_for_every_session_it_is_published_to() -> None:
    """Every other session gets the same frame object for one commit, a
    later commit of the same oids gets its own, and the shared frame is
    let go of once the loop has published."""

    async def scenario() -> tuple[list[FakeTransport], list[list[Any]], bool]:
        server = StorageServer({"1": MappingStorage()}, ServerSettings())
        server.attach(asyncio.get_running_loop())
        transports, clients = [], []
        for _ in range(3):
            protocol, transport, client = connect(server)
            protocol.data_received(
                client.handshake() + client.call(1, "register", ("1", True))
            )
            await asyncio.sleep(0)
            transport.writes.clear()
            transports.append(transport)
            clients.append(client)
        hosted = server.hosted["1"]
        oids = [p64(7), p64(9)]
        hosted.publish_commit(None, p64(10**6), oids)
        await asyncio.sleep(0)
        hosted.publish_commit(None, p64(10**6 + 1), oids)
        await asyncio.sleep(0)
        released = not server.shared_invalidations
        received = [
            [
                (event.method, event.args)
                for write in transport.writes
                for data in write
                for event in client.receive_data(data)
            ]
            for transport, client in zip(transports, clients, strict=True)
        ]
        return transports, received, released

    transports, received, released = asyncio.run(scenario())
    expected = [
        ("invalidateTransaction", (p64(10**6), (p64(7), p64(9)))),
        ("invalidateTransaction", (p64(10**6 + 1), (p64(7), p64(9)))),
    ]
    for events in received:
        assert [(m, (tid, tuple(oids))) for m, (tid, oids) in events] == expected
    first, second = ([write[0] for write in t.writes] for t in transports[:2])
    assert first[0] is second[0]
    assert first[1] is second[1]
    assert first[0] != first[1]
    assert released
