"""Blob uploads are written by worker threads, never on the event loop.

A ``FileWriter`` runs a connection's file jobs in order in the server's
worker threads, holding at most its limit of bytes; past it the transport
stops reading the client's calls until the writes catch up.  The server
tests here run a real FileStorage with a blob directory over the fake
transport of ``test_transport_writes``, with the server's only worker
thread held busy: whatever reaches the upload's file then cannot have been
written by the loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_transport_writes import connect
from ZODB.FileStorage import FileStorage
from ZODB.utils import p64, z64

from zodbserver.chunks import BLOB_CHUNK_SIZE
from zodbserver.protocol import ClientConnection, ErrorReply, Reply
from zodbserver.server.file_writer import BYTES_IN_FLIGHT, FileWriter
from zodbserver.server.settings import ServerSettings
from zodbserver.server.storage_server import StorageServer
from zodbserver.server.tasks import ServerTasks

#: Seconds a wait for another thread may take before the test fails.
PATIENCE = 10.0
OID = p64(1)
RECORD = b"(cZODB.blob\nBlob\nq\x01)\x81q\x02."


# -- the writer alone --------------------------------------------------------------


def test_jobs_run_in_order_in_worker_threads() -> None:
    async def scenario() -> tuple[list[int], list[int], int]:
        tasks = ServerTasks(max_threads=4)
        writer = FileWriter(tasks)
        order: list[int] = []
        threads: list[int] = []

        def job(number: int) -> None:
            threads.append(threading.get_ident())
            order.append(number)

        for number in range(200):
            writer.submit(lambda number=number: job(number), size=10)
            if number % 7 == 0:
                await asyncio.sleep(0)  # let batches start in between
        await writer.idle()
        queued = writer.queued_bytes
        await tasks.close()
        return order, threads, queued

    order, threads, queued = asyncio.run(scenario())
    assert order == list(range(200))
    assert threading.get_ident() not in threads
    assert queued == 0


def test_past_its_limit_the_writer_says_so_until_it_catches_up() -> None:
    async def scenario() -> None:
        tasks = ServerTasks(max_threads=1)
        gate = threading.Event()
        busy = asyncio.ensure_future(tasks.run_in_thread(gate.wait, PATIENCE))
        told: list[asyncio.Future[None]] = []
        writer = FileWriter(tasks, limit=100, over_limit=told.append)
        writer.submit(lambda: None, size=60)
        writer.submit(lambda: None, size=40)
        assert told == []
        assert writer.room().done()
        writer.submit(lambda: None, size=1)
        writer.submit(lambda: None, size=50)  # still the one notice
        (caught_up,) = told
        assert writer.room() is caught_up
        assert not caught_up.done()
        gate.set()
        await busy
        await asyncio.wait_for(caught_up, PATIENCE)
        assert writer.queued_bytes <= writer.limit
        await writer.idle()
        await tasks.close()

    asyncio.run(scenario())


def test_a_failed_job_is_reported_and_the_next_ones_still_run() -> None:
    async def scenario() -> tuple[list[Exception], list[str]]:
        tasks = ServerTasks(max_threads=1)
        writer = FileWriter(tasks)
        failures: list[Exception] = []
        ran: list[str] = []

        def fail() -> None:
            raise OSError("no space left on device")

        writer.submit(fail, failed=failures.append)
        writer.submit(lambda: ran.append("after"))
        await writer.idle()
        await tasks.close()
        return failures, ran

    failures, ran = asyncio.run(scenario())
    assert [str(error) for error in failures] == ["no space left on device"]
    assert ran == ["after"]


# -- uploads through the server ------------------------------------------------------


class Upload:
    """A connection over the fake transport to a server whose only worker
    thread is held (``hold``) until ``release``."""

    def __init__(self, storage: FileStorage) -> None:
        self.storage = storage
        self.server = StorageServer({"1": storage}, ServerSettings(worker_threads=1))
        self.server.attach(asyncio.get_running_loop())
        self.protocol, self.transport, self.client = connect(self.server)
        self.protocol.data_received(
            self.client.handshake() + self.client.call(1, "register", ("1", False))
        )
        self.replies: dict[Any, Any] = {}
        self._gate = threading.Event()
        self._busy: asyncio.Future[Any] | None = None

    def hold(self) -> None:
        self._busy = asyncio.ensure_future(
            self.server.tasks.run_in_thread(self._gate.wait, PATIENCE)
        )

    async def release(self) -> None:
        self._gate.set()
        assert self._busy is not None
        await self._busy

    @property
    def uploads(self) -> list[Path]:
        return sorted(Path(self.storage.temporaryDirectory()).iterdir())

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)

    async def reply(self, msgid: int) -> Any:
        """The answer to call ``msgid``, once the server has written it."""
        deadline = time.monotonic() + PATIENCE
        while msgid not in self.replies:
            for write in self.transport.writes:
                for data in write:
                    for event in self.client.receive_data(data):
                        if isinstance(event, Reply | ErrorReply):
                            self.replies[event.msgid] = event
            self.transport.writes.clear()
            if msgid in self.replies:
                break
            assert time.monotonic() < deadline, f"no reply to call {msgid}"
            await asyncio.sleep(0.001)
        event = self.replies[msgid]
        assert isinstance(event, Reply), event
        return event.result

    async def close(self) -> None:
        self.protocol.connection_lost(None)
        await self.protocol.session._files.idle()
        await self.server.tasks.close()


def blob_calls(client: ClientConnection, blob: bytes) -> bytes:
    """A transaction storing ``blob`` for ``OID``, up to its vote (call 2)."""
    calls = [
        client.call_async("tpc_begin", (1, b"", b"", {})),
        client.call_async("storea", (OID, z64, RECORD, 1)),
        client.call_async("storeBlobStart", ()),
    ]
    for start in range(0, len(blob), BLOB_CHUNK_SIZE):
        chunk = blob[start : start + BLOB_CHUNK_SIZE]
        calls.append(client.call_async("storeBlobChunk", (chunk,)))
    calls.append(client.call_async("storeBlobEnd", (OID, z64, RECORD, 1)))
    calls.append(client.call(2, "vote", (1,)))
    return b"".join(calls)


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[FileStorage]:
    storage = FileStorage(str(tmp_path / "Data.fs"), blob_dir=str(tmp_path / "blobs"))
    yield storage
    storage.close()


def test_chunks_are_written_off_the_loop_in_order_and_in_bounded_memory(
    storage: FileStorage,
) -> None:
    blob = os.urandom(BYTES_IN_FLIGHT + 3 * BLOB_CHUNK_SIZE + 123)

    async def scenario() -> bytes:  # the tid
        upload = Upload(storage)
        upload.hold()
        upload.send(blob_calls(upload.client, blob))
        # Every chunk the loop took waits for the busy worker: the loop
        # wrote none of them, nor created the file.
        assert upload.uploads == []
        files = upload.protocol.session._files
        assert files.queued_bytes > BYTES_IN_FLIGHT
        assert files.queued_bytes <= BYTES_IN_FLIGHT + BLOB_CHUNK_SIZE
        # ... and the calls after them wait unread.
        assert not upload.transport.reading
        assert upload.protocol._backlog is not None
        await upload.release()
        assert await upload.reply(2) == ()  # the vote, once all is written
        assert upload.transport.reading
        upload.send(upload.client.call(3, "tpc_finish", (1,)))
        tid: bytes = await upload.reply(3)
        assert upload.uploads == []
        await upload.close()
        return tid

    tid = asyncio.run(scenario())
    assert Path(storage.loadBlob(OID, tid)).read_bytes() == blob


def test_a_disconnect_while_chunks_wait_removes_the_file(
    storage: FileStorage,
) -> None:
    async def scenario() -> list[Path]:
        upload = Upload(storage)
        upload.hold()
        calls = blob_calls(upload.client, os.urandom(10 * BLOB_CHUNK_SIZE))
        upload.send(calls[: len(calls) // 2])
        upload.protocol.connection_lost(None)
        await upload.release()
        await upload.protocol.session._files.idle()
        left = upload.uploads
        await upload.close()
        return left

    assert asyncio.run(scenario()) == []


def test_an_abort_removes_the_finished_upload(storage: FileStorage) -> None:
    async def scenario() -> tuple[list[Path], list[Path]]:
        upload = Upload(storage)
        calls = blob_calls(upload.client, os.urandom(3 * BLOB_CHUNK_SIZE))
        vote_at = calls.rindex(upload.client.call(2, "vote", (1,)))
        upload.send(calls[:vote_at] + upload.client.call(4, "ping", ()))
        await upload.reply(4)
        await upload.protocol.session._files.idle()
        before = upload.uploads
        upload.send(upload.client.call(5, "tpc_abort", (1,)))
        await upload.reply(5)
        await upload.protocol.session._files.idle()
        after = upload.uploads
        await upload.close()
        return before, after

    before, after = asyncio.run(scenario())
    assert len(before) == 1
    assert after == []
