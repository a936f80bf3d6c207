"""Blobs streamed over the connection, end to end (docs/architecture.md, Blob transfer).

* Sizes around the 59000-byte chunk: written by one client, read back by
  another with a fresh blob cache, byte for byte, with our client and ZEO
  6's ``ClientStorage`` as writer and reader, in both wire encodings.
* A large blob (20 MB always; 200 MB with ``ZODBSERVER_STRESS=1``) sent up
  and down with the server and both clients in child processes: their peak
  resident memory (``VmHWM``) must grow by less than ``MEMORY_BUDGET``,
  and a second client doing small loads and commits keeps being answered
  while the blob streams.
* Four clients loading the same and different blobs at once.
* Pack with garbage collection while another client keeps loading a blob.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import ZODB
from test_hostile_input import MAXTID, Z64, RawClient, raw_commit, record
from ZEO.ClientStorage import ClientStorage as ZEOClientStorage
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage

from zodbserver.client import ClientStorage
from zodbserver.server.thread import ServerThread

CHUNK = 59000
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1]
MB = 1 << 20
#: Largest growth of a process's peak resident memory during a transfer:
#: 50 MB, and less than half the blob -- streaming needs a few chunk
#: buffers whatever the size, so more means the blob is being held whole
#: (a third proved too tight for the allocator's own slack on a busy
#: machine: 8.4 MB seen for a 20 MB blob).
MEMORY_BUDGET = 50 * MB
#: Small loads the bystander must complete while a large blob streams
#: (a 20 MB transfer takes well under a second here).
MIN_SMALL_LOADS = 3
#: The longest any single small operation may take meanwhile.
MAX_SMALL_OPERATION_SECONDS = 5.0
#: Bound on every wait for a child process.
PATIENCE = 120.0

LARGE_SIZES = [pytest.param(20 * MB, id="20MB")]
if os.environ.get("ZODBSERVER_STRESS") == "1":
    LARGE_SIZES.append(pytest.param(200 * MB, id="200MB"))

KINDS = ["ours", "zeo"]


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def open_client(kind: str, address: Any, blob_dir: Path, **options: Any) -> Any:
    factory = ClientStorage if kind == "ours" else ZEOClientStorage
    return factory(address, blob_dir=str(blob_dir), wait_timeout=30, **options)


@contextlib.contextmanager
def open_db(kind: str, address: Any, blob_dir: Path, **options: Any) -> Iterator[Any]:
    storage = open_client(kind, address, blob_dir, **options)
    try:
        db = ZODB.DB(storage)
    except BaseException:
        storage.close()
        raise
    try:
        yield db
    finally:
        db.close()


def read_blob(blob: Blob) -> bytes:
    with blob.open("r") as file:
        return file.read()


def server_storage(tmp_path: Path) -> FileStorage:
    return FileStorage(str(tmp_path / "Data.fs"), blob_dir=str(tmp_path / "blobs"))


# -- 1. sizes around the chunk size ------------------------------------------


@pytest.mark.parametrize("msgpack", [True, False], ids=["M5", "Z5"])
@pytest.mark.parametrize("reader", KINDS)
@pytest.mark.parametrize("writer", KINDS)
def test_sizes_around_the_chunk_size(
    tmp_path: Path, writer: str, reader: str, msgpack: bool
) -> None:
    storage = server_storage(tmp_path)
    expected = {size: payload(size, seed=size) for size in SIZES}
    with ServerThread({"1": storage}, msgpack=msgpack) as address:
        with (
            open_db(writer, address, tmp_path / "writer-cache") as db,
            db.transaction() as connection,
        ):
            for size, data in expected.items():
                blob = Blob()
                with blob.open("w") as file:
                    file.write(data)
                connection.root()[size] = blob
        with open_db(reader, address, tmp_path / "reader-cache") as db:
            connection = db.open()
            try:
                for size, data in expected.items():
                    blob = connection.root()[size]
                    assert read_blob(blob) == data, size
                    # The server's own copy is the same bytes.
                    path = storage.loadBlob(blob._p_oid, blob._p_serial)
                    assert Path(path).read_bytes() == data, size
            finally:
                connection.close()
        # The reader's cache now holds exactly the downloaded files.
        cached = sorted(
            path.stat().st_size for path in (tmp_path / "reader-cache").rglob("*.blob")
        )
        assert cached == sorted(SIZES)
        assert not list((tmp_path / "reader-cache").rglob("*.dl"))


# -- 1b. a large blob, in child processes, with memory measured ---------------

#: Our server in a child process; prints "LISTENING <address as JSON>".
SERVER_SCRIPT = r"""
import json, sys
from ZODB.FileStorage import FileStorage
from zodbserver.server.main import run
from zodbserver.server.settings import ServerSettings

path, blob_dir = sys.argv[1], sys.argv[2]
storage = FileStorage(path, blob_dir=blob_dir)

def ready(address):
    print("LISTENING", json.dumps(address), flush=True)

sys.exit(run(ServerSettings(address=("127.0.0.1", 0)), {"1": storage}, ready=ready))
"""

#: A client in a child process: writes or reads root["big"], reporting its
#: peak memory and the transfer's wall-clock window as JSON lines.  It waits
#: for a line on stdin between getting ready and transferring.
CLIENT_SCRIPT = r"""
import hashlib, json, random, sys, time
import transaction, ZODB
from ZODB.blob import Blob

def peak():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

def say(**message):
    print(json.dumps(message), flush=True)

options = json.loads(sys.argv[1])
address = options["address"]
address = tuple(address) if isinstance(address, list) else address
if options["kind"] == "zeo":
    from ZEO.ClientStorage import ClientStorage
else:
    from zodbserver.client import ClientStorage
db = ZODB.DB(ClientStorage(address, blob_dir=options["cache"], wait_timeout=30))
connection = db.open()
root = connection.root()
digest = hashlib.sha256()
if options["mode"] == "write":
    blob = Blob()
    connection.add(blob)
    with blob.open("w") as file:
        remaining, piece_number = options["size"], 0
        while remaining:
            piece = random.Random(piece_number).randbytes(min(remaining, 1 << 20))
            file.write(piece)
            digest.update(piece)
            remaining -= len(piece)
            piece_number += 1
    root["big"] = blob
else:
    blob = root["big"]
say(ready=True, peak=peak())
sys.stdin.readline()
start = time.time()
if options["mode"] == "write":
    transaction.commit()
else:
    with blob.open("r") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
end = time.time()
say(start=start, end=end, peak=peak(), sha256=digest.hexdigest())
connection.close()
db.close()
"""


def peak_memory(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def expected_sha256(size: int) -> str:
    digest = hashlib.sha256()
    piece_number = 0
    while size:
        piece = random.Random(piece_number).randbytes(min(size, MB))
        digest.update(piece)
        size -= len(piece)
        piece_number += 1
    return digest.hexdigest()


class Child:
    """A child Python process talking JSON lines on stdout."""

    def __init__(self, script: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._lines: list[bytes] = []
        self._arrived = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._arrived:
                self._lines.append(line)
                self._arrived.notify_all()
        with self._arrived:
            self._lines.append(b"")  # end of output
            self._arrived.notify_all()

    def line(self, timeout: float = PATIENCE) -> bytes:
        with self._arrived:
            if not self._arrived.wait_for(lambda: self._lines, timeout):
                raise TimeoutError("the child process said nothing")
            line = self._lines.pop(0)
        assert line, f"the child process ended (exit code {self.process.poll()})"
        return line

    def message(self) -> dict[str, Any]:
        return dict(json.loads(self.line()))

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()

    def finish(self) -> int:
        """Wait for the child (after telling it to stop, if it is a server)."""
        try:
            return self.process.wait(PATIENCE)
        finally:
            self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(PATIENCE)
        self._reader.join(PATIENCE)
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        self.process.stdout.close()


@contextlib.contextmanager
def server_process(tmp_path: Path) -> Iterator[tuple[Any, Child]]:
    child = Child(SERVER_SCRIPT, str(tmp_path / "Data.fs"), str(tmp_path / "blobs"))
    try:
        line = child.line()
        assert line.startswith(b"LISTENING "), line
        bound = json.loads(line.split(b" ", 1)[1])
        yield (bound if isinstance(bound, str) else tuple(bound)), child
        child.process.terminate()
        assert child.finish() == 0
    finally:
        child.close()


@dataclass
class Bystander:
    """Two raw clients in threads, timing each operation: one doing small
    loads, one small commits.  Loads are answered by the server's loop and
    must keep coming while a blob streams; a commit may also wait for the
    disk (its fsync queues behind the blob's dirty pages), so it runs apart
    and does not hold the loads up."""

    address: Any
    #: (start, end, kind) wall-clock times of each completed operation.
    operations: list[tuple[float, float, str]] = field(default_factory=list)
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Bystander:
        for kind in ("load", "commit"):
            running = threading.Event()
            thread = threading.Thread(target=self._run, args=(kind, running))
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
            # Measure only once it is registered and has been answered once.
            assert running.wait(PATIENCE)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(PATIENCE)
            assert not thread.is_alive()

    def _run(self, kind: str, running: threading.Event) -> None:
        try:
            with RawClient(self.address) as client:
                client.result("register", "1", False)
                value = 0
                while not self._stop.is_set():
                    started = time.time()
                    if kind == "commit":
                        oid = client.result("new_oids", 1)[0]
                        raw_commit(client, oid, record(value))
                    else:
                        client.result("loadBefore", Z64, MAXTID)
                    self.operations.append((started, time.time(), kind))
                    running.set()
                    value += 1
        except BaseException as exc:  # the test checks ``error``
            self.error = exc
        finally:
            running.set()

    def during(self, start: float, end: float, kind: str) -> list[float]:
        """Durations of the ``kind`` operations completed within [start, end]."""
        return [
            done - began
            for began, done, what in self.operations
            if what == kind and start <= done <= end
        ]


def transfer(
    tmp_path: Path, address: Any, server: Child, kind: str, mode: str, size: int
) -> dict[str, Any]:
    """One client child writing or reading root["big"]; returns its figures."""
    options = {
        "address": address,
        "kind": kind,
        "mode": mode,
        "size": size,
        "cache": str(tmp_path / f"{mode}-cache"),
    }
    child = Child(CLIENT_SCRIPT, json.dumps(options))
    try:
        ready = child.message()
        server_before = peak_memory(server.pid)
        with Bystander(address) as bystander:
            child.go()
            done = child.message()
        server_after = peak_memory(server.pid)
        assert child.finish() == 0
    finally:
        child.close()
    assert bystander.error is None, bystander.error
    return {
        "sha256": done["sha256"],
        "seconds": done["end"] - done["start"],
        "client_growth": done["peak"] - ready["peak"],
        "server_growth": server_after - server_before,
        "small_loads": bystander.during(done["start"], done["end"], "load"),
        "small_commits": bystander.during(done["start"], done["end"], "commit"),
    }


@pytest.mark.parametrize("size", LARGE_SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_large_blob_streams_in_bounded_memory(
    tmp_path: Path, kind: str, size: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with server_process(tmp_path) as (address, server):
        figures = {
            mode: transfer(tmp_path, address, server, kind, mode, size)
            for mode in ("write", "read")
        }
    with capsys.disabled():
        for mode, figure in figures.items():
            loads, commits = figure["small_loads"], figure["small_commits"]
            print(
                f"\n{kind} {mode} {size // MB} MB: {figure['seconds']:.2f} s, "
                f"client +{figure['client_growth'] / MB:.1f} MB, "
                f"server +{figure['server_growth'] / MB:.1f} MB, "
                f"{len(loads)} small loads and {len(commits)} commits meanwhile "
                f"(longest {max(loads + commits, default=0):.3f} s)"
            )
    sha256 = expected_sha256(size)
    budget = min(MEMORY_BUDGET, size // 2)
    for mode, figure in figures.items():
        assert figure["sha256"] == sha256, mode
        assert figure["client_growth"] < budget, (mode, figure)
        assert figure["server_growth"] < budget, (mode, figure)
        loads, commits = figure["small_loads"], figure["small_commits"]
        assert len(loads) >= MIN_SMALL_LOADS, (mode, figure)
        assert max(loads + commits) < MAX_SMALL_OPERATION_SECONDS, (mode, figure)
    # The server keeps the bytes too.
    files = list((tmp_path / "blobs").rglob("*.blob"))
    assert [path.stat().st_size for path in files] == [size]
    assert not list((tmp_path / "blobs" / "tmp").iterdir())


# -- 2. four clients at once --------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_four_clients_load_concurrently(tmp_path: Path, kind: str) -> None:
    storage = server_storage(tmp_path)
    blobs = {f"b{n}": payload(300_000 + n * 77_777, seed=n) for n in range(4)}
    with ServerThread({"1": storage}) as address:
        with (
            open_db("ours", address, tmp_path / "writer-cache") as db,
            db.transaction() as connection,
        ):
            for name, data in blobs.items():
                blob = Blob()
                with blob.open("w") as file:
                    file.write(data)
                connection.root()[name] = blob
        start = threading.Barrier(4, timeout=PATIENCE)
        results: dict[int, dict[str, bytes]] = {}
        errors: list[BaseException] = []

        def load(number: int) -> None:
            try:
                cache = tmp_path / f"cache-{number}"
                with open_db(kind, address, cache) as db:
                    connection = db.open()
                    try:
                        root = connection.root()
                        # Everyone loads b0 first (the same blob at once),
                        # then the others in an order of their own.
                        names = [
                            "b0",
                            *sorted(
                                set(blobs) - {"b0"}, key=lambda n: hash((n, number))
                            ),
                        ]
                        start.wait()
                        results[number] = {
                            name: read_blob(root[name]) for name in names
                        }
                    finally:
                        connection.close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(PATIENCE)
        assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert results == {number: blobs for number in range(4)}


# -- 3. pack with garbage collection -------------------------------------------


def test_pack_removes_unreachable_blobs_while_another_client_reads(
    tmp_path: Path,
) -> None:
    storage = server_storage(tmp_path)
    kept, dropped = payload(200_000, seed=1), payload(150_000, seed=2)
    with (
        ServerThread({"1": storage}) as address,
        open_db("ours", address, tmp_path / "writer-cache") as db,
    ):
        with db.transaction() as connection:
            for name, data in (("kept", kept), ("dropped", dropped)):
                blob = Blob()
                with blob.open("w") as file:
                    file.write(data)
                connection.root()[name] = blob
        with db.transaction() as connection:
            root = connection.root()
            root["kept"]._p_activate()
            kept_oid = root["kept"]._p_oid
            kept_serial = root["kept"]._p_serial
            dropped_oid = root["dropped"]._p_oid
            del root["dropped"]
        dropped_dir = Path(storage.fshelper.getPathForOID(dropped_oid))
        kept_dir = Path(storage.fshelper.getPathForOID(kept_oid))
        assert list(dropped_dir.glob("*.blob"))

        reads = 0
        failures: list[BaseException] = []
        stop = threading.Event()
        first_read = threading.Event()
        reader = open_client("ours", address, tmp_path / "reader-cache")

        def read_in_a_loop() -> None:
            nonlocal reads
            try:
                while not stop.is_set():
                    path = reader.loadBlob(kept_oid, kept_serial)
                    assert Path(path).read_bytes() == kept
                    os.remove(path)  # so that the next load downloads again
                    reads += 1
                    first_read.set()
            except BaseException as exc:
                failures.append(exc)
            finally:
                first_read.set()

        thread = threading.Thread(target=read_in_a_loop)
        try:
            thread.start()
            assert first_read.wait(PATIENCE)
            assert failures == []
            db.pack(time.time() + 1)
            stop.set()
            thread.join(PATIENCE)
            assert not thread.is_alive()
        finally:
            stop.set()
            reader.close()
        assert failures == []
        assert reads > 0

        assert not dropped_dir.exists() or not list(dropped_dir.glob("*.blob"))
        assert [p.read_bytes() for p in kept_dir.glob("*.blob")] == [kept]
        # A fresh client still loads the reachable blob.
        with open_db("ours", address, tmp_path / "after-cache") as db2:
            connection = db2.open()
            try:
                assert read_blob(connection.root()["kept"]) == kept
                assert "dropped" not in connection.root()
            finally:
                connection.close()
