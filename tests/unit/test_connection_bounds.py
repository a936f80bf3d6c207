"""What one client that never reads its socket can make the server buffer.

A connection's transport holds what the client has not read.  Past the
connection's buffer limit the server stops reading its calls; replies
already under way are still written, up to ``HARD_LIMIT_FACTOR`` times the
limit (at least ``HARD_LIMIT_FLOOR``) more, and then the client is dropped.
A blob download waits for the buffer to drain between reads of the file.
These tests count the bytes the fake transport of ``test_transport_writes``
holds -- what a real transport would keep in memory for the client.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import transaction
import ZODB
from test_transport_writes import FakeTransport, connect
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage
from ZODB.MappingStorage import MappingStorage
from ZODB.utils import p64

from zodbserver.chunks import BLOB_CHUNK_SIZE, CHUNKS_PER_READ
from zodbserver.protocol import AsyncCall, ClientConnection, Reply
from zodbserver.server.settings import ServerSettings
from zodbserver.server.storage_server import StorageServer
from zodbserver.server.transport import (
    FLUSH_BYTES,
    HARD_LIMIT_FACTOR,
    HARD_LIMIT_FLOOR,
)

#: Seconds a wait for another thread may take before the test fails.
PATIENCE = 10.0
LIMIT = 64 * 1024
OBJECT = b"x" * 100_000


async def until(condition: object, what: str) -> None:
    """Let the loop and the worker threads run until ``condition()``."""
    deadline = time.monotonic() + PATIENCE
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.001)


def test_deferred_replies_to_a_client_that_never_reads_are_bounded() -> None:
    """Calls answered later (``loadSerial`` in a worker thread while the
    storage's thread is busy) fill no buffer when they arrive, so a client
    can have many under way.  Their replies, 200 times the buffer limit in
    all, are written as they come, and once the hard limit's worth more than
    the limit is unread the client is dropped: the transport never holds
    more than the limit, the hard limit and one batch of writes."""
    calls = 2000

    async def scenario() -> tuple[FakeTransport, StorageServer, int, int]:
        storage = MappingStorage()
        db = ZODB.DB(storage)
        with db.transaction() as connection:
            connection.root()["big"] = OBJECT
        serial = storage.lastTransaction()
        server = StorageServer(
            {"1": storage}, ServerSettings(connection_buffer_limit=LIMIT)
        )
        server.attach(asyncio.get_running_loop())
        protocol, transport, client = connect(server)
        protocol.data_received(
            client.handshake() + client.call(1, "register", ("1", True))
        )
        await asyncio.sleep(0)
        # The storage's thread is busy (a vote, say): the reads are deferred.
        gate = threading.Event()
        busy = server.hosted["1"].submit(gate.wait, PATIENCE)
        protocol.data_received(
            b"".join(
                client.call(msgid, "loadSerial", (p64(0), serial))
                for msgid in range(2, calls + 2)
            )
        )
        dispatched = len(server.tasks._replies)
        await until(lambda: transport.closed, "the client is dropped")
        await until(lambda: not server.tasks._replies, "the replies are done")
        gate.set()
        await busy
        protocol.connection_lost(None)
        db.close()
        return transport, server, dispatched, len(OBJECT) * calls

    transport, server, dispatched, replies = asyncio.run(scenario())
    assert dispatched == 2000  # none was answered at once
    hard = max(LIMIT * HARD_LIMIT_FACTOR, HARD_LIMIT_FLOOR)
    assert replies > 10 * (LIMIT + hard)
    assert transport.most_buffered <= LIMIT + hard + FLUSH_BYTES + 2 * len(OBJECT)
    assert server.traffic.closed["slow_client"] == 1


@pytest.fixture
def blob_storage(tmp_path: Path) -> Iterator[tuple[FileStorage, bytes, bytes, bytes]]:
    """A FileStorage holding a 20 MB blob: (storage, oid, serial, data)."""
    storage = FileStorage(str(tmp_path / "Data.fs"), blob_dir=str(tmp_path / "blobs"))
    data = os.urandom(20 * 1024 * 1024)
    db = ZODB.DB(storage)
    try:
        with db.transaction() as connection:
            blob = Blob(data)
            connection.root()["blob"] = blob
        yield storage, blob._p_oid, storage.lastTransaction(), data
    finally:
        transaction.abort()
        db.close()


def received_blob(client: ClientConnection, transport: FakeTransport) -> list[object]:
    """The events the client gets from what the transport holds (read now)."""
    events = [
        event
        for write in transport.writes
        for frame in write
        for event in client.receive_data(frame)
    ]
    transport.writes.clear()
    return events


def test_a_blob_download_to_a_client_that_never_reads_is_bounded(
    blob_storage: tuple[FileStorage, bytes, bytes, bytes],
) -> None:
    """``sendBlob`` reads the file a few chunks at a time and waits for the
    buffer to drain in between: to a client that reads nothing, a 20 MB
    blob costs the buffer limit and one read's worth of chunks, however
    long it waits; once the client reads, the rest follows, byte for byte."""
    storage, oid, serial, data = blob_storage
    one_read = CHUNKS_PER_READ * (BLOB_CHUNK_SIZE + 64)  # 64: a frame's overhead

    async def scenario() -> tuple[FakeTransport, int, bytes, object]:
        server = StorageServer(
            {"1": storage}, ServerSettings(connection_buffer_limit=LIMIT)
        )
        server.attach(asyncio.get_running_loop())
        protocol, transport, client = connect(server)
        protocol.data_received(
            client.handshake() + client.call(1, "register", ("1", True))
        )
        await asyncio.sleep(0)
        protocol.data_received(client.call(2, "sendBlob", (oid, serial)))
        await until(lambda: transport.paused, "the buffer fills")
        # Let the download go on as far as it can: every read it makes,
        # in a worker thread or not, is given time to complete.
        for _ in range(100):
            await asyncio.sleep(0.001)
        stalled_at = transport.buffered
        received = bytearray()
        reply: object = None
        events: list[object] = []
        while reply is None:
            events.extend(received_blob(client, transport))
            for event in events:
                if isinstance(event, AsyncCall) and event.method == "receiveBlobChunk":
                    received += event.args[2]
                elif isinstance(event, Reply) and event.msgid == 2:
                    reply = event
            events.clear()
            transport.drain()
            await asyncio.sleep(0.001)
        protocol.connection_lost(None)
        await server.tasks.close()
        return transport, stalled_at, bytes(received), reply

    transport, stalled_at, received, reply = asyncio.run(scenario())
    assert stalled_at < len(data) // 4  # it waited for the client
    assert transport.most_buffered <= LIMIT + one_read + FLUSH_BYTES
    assert received == data
    assert isinstance(reply, Reply)
