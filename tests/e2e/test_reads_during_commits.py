"""The event loop never waits for a commit's disk work.

FileStorage holds its files across a finish's fsync, and a read on the
loop would wait for that -- and every client with it.  Here the fsync is
made to last until the test says (``_finish_finish`` is where FileStorage
flushes and fsyncs): a read sent meanwhile is answered once the finish is
done, and every other client is answered at once in the meantime.  A vote
holds FileStorage's lock, which ``loadSerial`` and ``history`` take: while
one runs they are read in a worker thread, and the loop serves others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import transaction
import ZODB
from ZEO.ClientStorage import ClientStorage
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle

from support.raw_client import PROMPTLY, RawClient
from support.waiting import wait_until
from zodbserver.protocol import Reply
from zodbserver.server.thread import ServerThread

MAXTID = b"\x7f" + b"\xff" * 7


class SlowFsyncStorage(FileStorage):
    """A FileStorage whose finish waits, where it fsyncs, until released."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.syncing = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def _finish_finish(self, tid: bytes) -> None:
        self.syncing.set()
        assert self.release.wait(60)
        super()._finish_finish(tid)


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[tuple[SlowFsyncStorage, object]]:
    storage = SlowFsyncStorage(str(tmp_path / "Data.fs"))
    with ServerThread({"1": storage}) as address:
        yield storage, address


def test_reads_wait_in_a_thread_while_the_loop_serves_others(
    slow: tuple[SlowFsyncStorage, object],
) -> None:
    storage, address = slow
    db = ZODB.DB(ClientStorage(address, wait_timeout=PROMPTLY))
    try:
        with db.transaction() as connection:
            connection.root()["x"] = 1
    finally:
        db.close()
        transaction.abort()
    writer = ClientStorage(address, wait_timeout=PROMPTLY)
    reader = RawClient(address)
    bystander = RawClient(address)
    try:
        reader.result("register", "1", False)
        bystander.result("register", "1", False)
        storage.syncing.clear()
        storage.release.clear()
        metadata = TransactionMetaData()
        writer.tpc_begin(metadata)
        writer.store(writer.new_oid(), b"\0" * 8, zodb_pickle(MinPO(1)), "", metadata)
        writer.tpc_vote(metadata)
        finish = threading.Thread(target=writer.tpc_finish, args=(metadata,))
        finish.start()
        assert storage.syncing.wait(PROMPTLY)

        # The read waits for the finish ...
        read = reader.send_call("loadBefore", b"\0" * 8, MAXTID)
        time.sleep(0.2)
        # ... while the loop answers everyone else at once.
        started = time.monotonic()
        assert bystander.result("lastTransaction")
        assert bystander.result("ping") is None
        answered_in = time.monotonic() - started
        storage.release.set()
        finish.join(PROMPTLY)
        event = reader.next_event()
        assert isinstance(event, Reply), event
        assert event.msgid == read
        assert event.result[0] == storage.loadBefore(b"\0" * 8, MAXTID)[0]
    finally:
        storage.release.set()
        reader.close()
        bystander.close()
        writer.close()
    assert answered_in < PROMPTLY / 2


class SlowVoteStorage(FileStorage):
    """A FileStorage whose vote waits, holding the storage's lock, until
    released; it records the thread each ``loadSerial`` and ``history``
    runs in."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.voting = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.read_in: list[str] = []

    def tpc_vote(self, transaction: object) -> object:
        with self._lock:
            self.voting.set()
            assert self.release.wait(60)
            return super().tpc_vote(transaction)

    def loadSerial(self, oid: bytes, serial: bytes) -> bytes:
        self.read_in.append(threading.current_thread().name)
        return super().loadSerial(oid, serial)

    def history(self, oid: bytes, size: int = 1, filter: object = None) -> object:  # noqa: A002
        self.read_in.append(threading.current_thread().name)
        return super().history(oid, size, filter)


def test_load_serial_and_history_wait_in_a_thread_during_a_vote(
    tmp_path: Path,
) -> None:
    """``loadSerial`` and ``history`` take the lock a FileStorage's vote
    holds: while the storage's thread votes they are read in a worker
    thread, and the loop answers another client meanwhile -- before the
    vote is let go on.  On the loop they would stop it, and the bystander's
    calls would go unanswered until the vote ended."""
    storage = SlowVoteStorage(str(tmp_path / "Data.fs"))
    with ServerThread({"1": storage}) as address:
        db = ZODB.DB(ClientStorage(address, wait_timeout=PROMPTLY))
        try:
            with db.transaction() as connection:
                connection.root()["x"] = 1
        finally:
            db.close()
            transaction.abort()
        oid = b"\0" * 8
        serial = storage.lastTransaction()
        expected_record = storage.loadSerial(oid, serial)
        expected_history = storage.history(oid, 1)
        storage.read_in.clear()
        writer = ClientStorage(address, wait_timeout=PROMPTLY)
        reader = RawClient(address)
        bystander = RawClient(address)
        vote: threading.Thread | None = None
        try:
            reader.result("register", "1", False)
            bystander.result("register", "1", False)
            storage.voting.clear()
            storage.release.clear()
            metadata = TransactionMetaData()
            writer.tpc_begin(metadata)
            writer.store(
                writer.new_oid(), b"\0" * 8, zodb_pickle(MinPO(1)), "", metadata
            )
            vote = threading.Thread(target=writer.tpc_vote, args=(metadata,))
            vote.start()
            assert storage.voting.wait(PROMPTLY)

            # Both reads reach the storage, in one packet, and wait for the
            # vote's lock there ...
            load, history = 101, 102
            reader.sock.sendall(
                reader.connection.call(load, "loadSerial", (oid, serial))
                + reader.connection.call(history, "history", (oid, 1))
            )
            wait_until(
                lambda: len(storage.read_in) == 2,
                "both reads to begin",
                timeout=PROMPTLY,
            )
            # ... while the loop answers another client, the vote still held.
            assert bystander.result("lastTransaction") == serial
            assert bystander.result("loadBefore", oid, MAXTID)[0] == expected_record
            assert bystander.result("ping") is None
            assert not storage.release.is_set()
            storage.release.set()
            vote.join(PROMPTLY)
            writer.tpc_abort(metadata)
            answers = {}
            for _ in range(2):
                event = reader.next_event()
                assert isinstance(event, Reply), event
                answers[event.msgid] = event.result
        finally:
            storage.release.set()
            if vote is not None:
                vote.join(PROMPTLY)
            reader.close()
            bystander.close()
            writer.close()
    assert answers[load] == expected_record
    assert [entry["tid"] for entry in answers[history]] == [
        entry["tid"] for entry in expected_history
    ]
    assert len(storage.read_in) == 2
    assert all(name.startswith("zodbserver worker") for name in storage.read_in), (
        storage.read_in
    )
