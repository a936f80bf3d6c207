"""Durability: ``kill -9`` of the server loses no acknowledged transaction.

The server runs as a real child process (``zodbserver.server.main.run`` over
a FileStorage), stock ZEO 6 clients commit and record every transaction the
server acknowledged (the tid ``tpc_finish`` returned, and the value
written), and the server is SIGKILLed -- right after the last acknowledged
commit, or while another client is in the middle of a commit loop.  A new
server then opens the same Data.fs, and every acknowledged transaction must
be there with its tid and value; afterwards the file passes ``fstest``, every
transaction iterates, and every object loads.
"""

from __future__ import annotations

import io
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZEO.ClientStorage import ClientStorage
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileIterator, FileStorage
from ZODB.POSException import POSKeyError
from ZODB.scripts import fstest
from ZODB.utils import get_pickle_metadata

import zodbserver

#: A ready server prints "LISTENING host port" on its stdout.
SERVER_SCRIPT = r"""
import sys

from ZODB.FileStorage import FileStorage

from zodbserver.server.main import run
from zodbserver.server.settings import ServerSettings

path, pid_file = sys.argv[1:3]
storage = FileStorage(path)


def ready(address):
    print("LISTENING %s %d" % tuple(address), flush=True)


settings = ServerSettings(address=("127.0.0.1", 0), pid_filename=pid_file)
sys.exit(run(settings, {"1": storage}, ready=ready))
"""

STARTUP_TIMEOUT = 30.0
PROMPTLY = 10.0


class ServerProcess:
    def __init__(self, directory: Any) -> None:
        self.path = str(directory / "Data.fs")
        self.pid_file = str(directory / "server.pid")
        self.log_path = str(directory / "server.log")
        self.process: subprocess.Popen[bytes] | None = None
        self.address: tuple[str, int] | None = None

    def start(self) -> tuple[str, int]:
        assert self.process is None
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", SERVER_SCRIPT, self.path, self.pid_file],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        line = self._read_line(STARTUP_TIMEOUT)
        assert line.startswith(b"LISTENING "), (line, self.log())
        _, host, port = line.split()
        self.address = (host.decode(), int(port))
        with open(self.pid_file) as stream:
            assert int(stream.read()) == self.process.pid
        return self.address

    def _read_line(self, timeout: float) -> bytes:
        assert self.process is not None
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        data = b""
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the server did not start: {self.log()}"
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 1024)
                assert chunk, f"the server exited: {self.log()}"
                data += chunk
        return data

    def log(self) -> str:
        with open(self.log_path, errors="replace") as stream:
            return stream.read()[-3000:]

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs at all."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(PROMPTLY) == -signal.SIGKILL
        self._reap()

    def terminate(self) -> None:
        """A graceful stop (SIGTERM), which must exit 0."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(STARTUP_TIMEOUT) == 0, self.log()
        self._reap()
        assert not os.path.exists(self.pid_file)

    def _reap(self) -> None:
        assert self.process is not None
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def cleanup(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(PROMPTLY)
            self._reap()


@pytest.fixture
def server(tmp_path: Any) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path)
    try:
        yield process
    finally:
        process.cleanup()


def open_db(address: Any, wait_timeout: float = PROMPTLY) -> ZODB.DB:
    return ZODB.DB(ClientStorage(address, wait_timeout=wait_timeout))


def commit_value(db: ZODB.DB, key: str, value: int) -> bytes:
    """Commit ``root[key]["value"] = value`` (plus a new object); the tid."""
    manager = transaction.TransactionManager()
    connection = db.open(manager)
    try:
        root = connection.root()
        holder = root[key]
        holder["value"] = value
        holder[f"item{value}"] = PersistentMapping({"value": value})
        manager.commit()
        tid = holder._p_serial
    finally:
        manager.abort()
        connection.close()
    # Another client may have committed since: its invalidation may be in.
    assert tid <= db.storage.lastTransaction()
    return tid


def setup_database(address: Any, keys: tuple[str, ...]) -> bytes:
    db = open_db(address)
    try:
        with db.transaction() as connection:
            root = connection.root()
            for key in keys:
                root[key] = PersistentMapping({"value": -1})
        return db.storage.lastTransaction()
    finally:
        db.close()


def assert_acknowledged(address: Any, key: str, acknowledged: list[Any]) -> None:
    """Every acknowledged (tid, value) is in the restarted server's data."""
    db = open_db(address)
    try:
        for tid, value in acknowledged:
            history = {
                entry["tid"]
                for entry in db.storage.history(_oid_of(db, key), size=10**6)
            }
            assert tid in history, (tid, value)
            connection = db.open(at=tid)
            try:
                holder = connection.root()[key]
                assert holder["value"] == value
                assert holder[f"item{value}"]["value"] == value
                assert holder._p_serial == tid
            finally:
                connection.close()
    finally:
        db.close()


def _oid_of(db: ZODB.DB, key: str) -> bytes:
    with db.transaction() as connection:
        return connection.root()[key]._p_oid


def verify_data_file(path: str, acknowledged_tids: set[bytes]) -> None:
    """fstest passes, every transaction iterates, every object loads."""
    fstest.check(path)
    iterator = FileIterator(path)
    try:
        tids = []
        records = 0
        for txn in iterator:
            assert txn.status == " "
            tids.append(txn.tid)
            records += sum(1 for _ in txn)
    finally:
        iterator.close()
    assert tids == sorted(set(tids))
    assert acknowledged_tids <= set(tids)
    storage = FileStorage(path, read_only=True)
    try:
        loaded = 0
        next_oid = None
        while True:
            oid, tid, data, next_oid = storage.record_iternext(next_oid)
            current, serial = storage.load(oid)
            assert (current, serial) == (data, tid)
            module, _ = get_pickle_metadata(data)
            assert module in ("persistent.mapping", "ZODB.broken", "persistent")
            for revision in storage.history(oid, size=10**6):
                storage.loadSerial(oid, revision["tid"])
            loaded += 1
            if next_oid is None:
                break
        assert loaded == len(storage) > 0
    finally:
        storage.close()
    assert records >= loaded


def restart_and_verify(server: ServerProcess, acknowledged: dict[str, list[Any]]):
    address = server.start()
    for key, values in acknowledged.items():
        assert_acknowledged(address, key, values)
    # The restarted server takes new commits on top.
    db = open_db(address)
    try:
        final = commit_value(db, next(iter(acknowledged)), 10**6)
    finally:
        db.close()
    server.terminate()
    tids = {tid for values in acknowledged.values() for tid, _ in values}
    verify_data_file(server.path, tids | {final})


def test_sigkill_right_after_acknowledged_commits(server: ServerProcess) -> None:
    address = server.start()
    setup_database(address, ("a",))
    acknowledged = []
    db = open_db(address)
    try:
        for value in range(30):
            acknowledged.append((commit_value(db, "a", value), value))
        server.kill()  # at once: no grace for buffered writes
    finally:
        db.close()
    restart_and_verify(server, {"a": acknowledged})


def test_sigkill_while_another_client_is_committing(server: ServerProcess) -> None:
    address = server.start()
    setup_database(address, ("a", "b"))
    acknowledged: dict[str, list[Any]] = {"a": [], "b": []}
    failures: list[BaseException] = []
    stop = threading.Event()
    committing = threading.Event()
    # Short: once the server is gone, the loop's next call fails soon.
    loop_db = open_db(address, wait_timeout=2)

    def commit_loop() -> None:
        value = 0
        try:
            while not stop.is_set():
                tid = commit_value(loop_db, "b", value)
                acknowledged["b"].append((tid, value))
                if len(acknowledged["b"]) >= 3:
                    committing.set()
                value += 1
        except BaseException as exc:
            failures.append(exc)  # the kill ends the loop mid-commit
        finally:
            committing.set()

    worker = threading.Thread(target=commit_loop)
    db = open_db(address)
    try:
        worker.start()
        for value in range(20):
            acknowledged["a"].append((commit_value(db, "a", value), value))
        assert committing.wait(PROMPTLY)
        assert worker.is_alive(), failures
        server.kill()
        worker.join(PROMPTLY)
        assert not worker.is_alive()
    finally:
        stop.set()
        worker.join(PROMPTLY)
        db.close()
        loop_db.close()
    # The loop was still committing when the server died.
    assert failures, "the commit loop ended without noticing the kill"
    assert len(acknowledged["b"]) >= 3
    restart_and_verify(server, acknowledged)


def _vote_then_kill(server: ServerProcess, address: Any) -> bytes:
    """Vote a transaction of one new object, SIGKILL the server before the
    finish; return the object's oid."""
    size_before_vote = os.path.getsize(server.path)
    storage = ClientStorage(address, wait_timeout=PROMPTLY)
    try:
        metadata = TransactionMetaData()
        storage.tpc_begin(metadata)
        oid = storage.new_oid()
        storage.store(oid, b"\0" * 8, _record({"value": "voted"}), "", metadata)
        storage.tpc_vote(metadata)
        # The vote wrote the transaction (status "c") into Data.fs.
        assert os.path.getsize(server.path) > size_before_vote
        server.kill()
        storage.tpc_abort(metadata, timeout=0.1)  # frees the client's buffer
    finally:
        storage.close()
    return oid


def test_sigkill_between_vote_and_finish(server: ServerProcess) -> None:
    """Killed with a voted (locked, written, unfinished) transaction on disk:
    the restarted server drops it and keeps everything acknowledged."""
    address = server.start()
    setup_database(address, ("a",))
    db = open_db(address)
    try:
        acknowledged = [(commit_value(db, "a", value), value) for value in range(5)]
    finally:
        db.close()
    oid = _vote_then_kill(server, address)
    restart_and_verify(server, {"a": acknowledged})
    check = FileStorage(server.path, read_only=True)
    try:
        with pytest.raises(POSKeyError):
            check.load(oid)
    finally:
        check.close()


def test_restart_after_an_unfinished_vote_reports_the_last_commit(
    server: ServerProcess, tmp_path: Any
) -> None:
    """FileStorage takes the unfinished transaction's tid as its last one
    before it truncates it; the server reports the last committed tid, so
    a client's persistent cache verifies against a transaction that exists."""
    address = server.start()
    last = setup_database(address, ("a",))
    cached = zodbserver.DB(address, client="cached", var=str(tmp_path))
    try:
        with cached.transaction() as connection:
            assert connection.root()["a"] is not None  # cached, then saved
    finally:
        cached.close()
    _vote_then_kill(server, address)
    address = server.start()
    storage = ClientStorage(address, wait_timeout=PROMPTLY)
    try:
        assert storage.lastTransaction() == last
    finally:
        storage.close()
    reopened = zodbserver.ClientStorage(address, client="cached", var=str(tmp_path))
    try:
        assert reopened.lastTransaction() == last
        assert reopened.verify_result == "cache up to date"
    finally:
        reopened.close()
    assert "was voted but never finished" in server.log()
    server.terminate()


def _record(state: dict[str, Any]) -> bytes:
    """A ZODB data record of a PersistentMapping."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, 3)
    pickler.dump(PersistentMapping)
    pickler.dump({"data": state})
    return buffer.getvalue()
