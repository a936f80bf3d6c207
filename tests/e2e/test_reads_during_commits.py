"""The event loop never waits for a commit's disk work.

FileStorage holds its files across a finish's fsync, and a read on the
loop would wait for that -- and every client with it.  Here the fsync is
made to last until the test says (``_finish_finish`` is where FileStorage
flushes and fsyncs): a read sent meanwhile is answered once the finish is
done, and every other client is answered at once in the meantime.
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
