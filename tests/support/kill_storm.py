"""A storm of ``kill -9``: writers keep committing while the server dies.

Shared by the default suite's short storm (``tests/e2e/test_kill_storm.py``)
and the long one of ``python -m stress.torture``.

Four writers commit continuously, two through ZEO 6's client and two
through ours, one of each also writing a blob in every transaction; each
writer owns its objects, so no commit conflicts with another.  Meanwhile
the server process is SIGKILLed and restarted on the same port at random
(seeded) instants: ``run_storm``.  It fails when a writer is stuck (does not
commit twice more within ``RECOVERY`` seconds after the last restart) or
the server does not stop cleanly at the end.  Afterwards ``check_storage``
fails unless:

- the file passes ``fstest`` and every transaction iterates, in tid order;
- every commit a writer saw acknowledged (``commit()`` returned) is in the
  storage with the value and the blob it wrote;
- each writer's object holds its last acknowledged value or a later one
  (a commit whose answer was lost with the server may have landed).

Each restart is timed (``Restart``): from the spawn of the server process
to its accepting connections, and to the first commit a writer had
acknowledged by the new process -- one the writer began after the old
process was reaped and saw acknowledged before the next kill, so its
answer cannot have come from another process.  A restart killed again
before any writer committed has no such commit.
"""

from __future__ import annotations

import bisect
import functools
import io
import pickle
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import transaction
import ZEO
from persistent.mapping import PersistentMapping
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage
from ZODB.scripts import fstest

import zodbserver
from support.server_processes import ServerProcess
from support.waiting import wait_until

#: How long a writer may take to commit once the server is back.
RECOVERY = 60.0
#: (client, blobs) of each writer.
WRITERS = (("ours", False), ("ours", True), ("zeo", False), ("zeo", True))
#: The server's time up between a restart and the next kill, and its time
#: down between a kill and the restart, in seconds (uniform, seeded).
UP = (0.05, 0.8)
DOWN = (0.0, 0.3)


@dataclass(frozen=True)
class Ack:
    """One acknowledged commit (times from ``time.monotonic``)."""

    value: int
    #: When the writer called ``commit()``.
    began: float
    #: When ``commit()`` returned.
    acknowledged: float


@dataclass
class Writer:
    """One thread committing ``value`` (and a blob) to its own objects."""

    name: str
    kind: str
    blobs: bool
    db: Any
    #: Every acknowledged commit, in order.
    acks: list[Ack] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    oid: bytes = b""
    blob_oid: bytes = b""
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def acknowledged(self) -> list[int]:
        """The value of every acknowledged commit, in order."""
        return [ack.value for ack in self.acks]

    def setup(self) -> None:
        with self.db.transaction() as connection:
            root = connection.root()
            root[self.name] = PersistentMapping({"value": 0})
            if self.blobs:
                root[self.name + "-blob"] = Blob(b"0")
        with self.db.transaction() as connection:
            self.oid = connection.root()[self.name]._p_oid
            if self.blobs:
                self.blob_oid = connection.root()[self.name + "-blob"]._p_oid

    def committed(self, count: int) -> bool:
        """Whether ``count`` commits were acknowledged."""
        return len(self.acks) >= count

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        manager = transaction.TransactionManager()
        value = 0
        while not self.stop.is_set():
            value += 1
            connection = self.db.open(transaction_manager=manager)
            try:
                manager.begin()
                root = connection.root()
                root[self.name]["value"] = value
                if self.blobs:
                    with root[self.name + "-blob"].open("w") as file:
                        file.write(blob_content(self.name, value))
                began = time.monotonic()
                manager.commit()
                self.acks.append(Ack(value, began, time.monotonic()))
            except Exception as exc:
                manager.abort()
                kind = type(exc).__name__
                self.failures[kind] = self.failures.get(kind, 0) + 1
                time.sleep(0.05)
            finally:
                connection.close()

    def join(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(RECOVERY)
        assert not self.thread.is_alive(), f"{self.name} is stuck"


def blob_content(name: str, value: int) -> bytes:
    return f"{name} {value} ".encode() * 100


def open_db(kind: str, address: tuple[str, int], blob_dir: Path) -> Any:
    options: dict[str, Any] = dict(
        wait_timeout=RECOVERY,
        min_disconnect_poll=0.05,
        max_disconnect_poll=0.5,
        blob_dir=str(blob_dir),
    )
    if kind == "zeo":
        return ZEO.DB(address, shared_blob_dir=False, **options)
    return zodbserver.DB(address, **options)


@dataclass
class Restart:
    """One kill and restart (times from ``time.monotonic``)."""

    #: The SIGKILL was sent.
    kill_sent: float
    #: The killed process was reaped.
    killed: float
    #: The new process is being spawned.
    spawned: float = 0.0
    #: It accepts connections (``ServerProcess.start`` returned).
    listening: float = 0.0
    #: The first commit a writer saw acknowledged by it, if any.
    first_commit: float | None = None

    @property
    def to_listening(self) -> float:
        return self.listening - self.spawned

    @property
    def to_first_commit(self) -> float | None:
        if self.first_commit is None:
            return None
        return self.first_commit - self.spawned


@dataclass
class StormResult:
    seed: int
    kills: int
    server_kind: str
    writers: list[Writer]
    restarts: list[Restart]
    #: Start and end of the whole run, ``time.monotonic``.
    began: float
    ended: float

    @property
    def acknowledged(self) -> int:
        return sum(len(writer.acks) for writer in self.writers)

    @property
    def failures(self) -> dict[str, int]:
        """Failed commits of all writers, by exception class."""
        total: dict[str, int] = {}
        for writer in self.writers:
            for kind, count in writer.failures.items():
                total[kind] = total.get(kind, 0) + count
        return total


def run_storm(
    directory: Path,
    *,
    kills: int,
    seed: int,
    server_kind: str = "ours",
    progress: Callable[[int, Restart], None] | None = None,
) -> StormResult:
    """Run the storm on ``directory/Data.fs`` (and ``directory/blobs``):
    ``kills`` SIGKILLs at instants drawn from ``seed``.  ``progress`` is
    called after each restart with the number of kills done."""
    rng = random.Random(seed)
    server = ServerProcess(server_kind, directory, blobs=True)
    writers: list[Writer] = []
    restarts: list[Restart] = []
    began = time.monotonic()
    with server:
        server.start()
        try:
            for number, (kind, blobs) in enumerate(WRITERS):
                name = f"{kind}-{'blob' if blobs else 'plain'}-{number}"
                db = open_db(kind, server.address, directory / f"cache-{name}")
                writer = Writer(name, kind, blobs, db)
                writers.append(writer)
                writer.setup()
            for writer in writers:
                writer.start()
            for done in range(1, kills + 1):
                time.sleep(rng.uniform(*UP))
                kill_sent = time.monotonic()
                server.kill()
                restart = Restart(kill_sent, time.monotonic())
                restarts.append(restart)
                time.sleep(rng.uniform(*DOWN))
                restart.spawned = time.monotonic()
                server.start()
                restart.listening = time.monotonic()
                if progress is not None:
                    progress(done, restart)
            # No writer is stuck: each commits twice more after the last
            # restart.
            for writer in writers:
                wait_until(
                    functools.partial(writer.committed, len(writer.acks) + 2),
                    f"{writer.name} to commit after the storm (seed {seed}, "
                    f"failures {writer.failures})",
                    timeout=RECOVERY,
                )
            for writer in writers:
                writer.join()
        finally:
            for writer in writers:
                writer.stop.set()
            for writer in writers:
                writer.db.close()
        ended = time.monotonic()
        assert server.stop() == 0, server.log()
    for writer in writers:
        assert writer.acks, (writer.name, writer.failures, seed)
    _first_commits(restarts, writers, ended)
    return StormResult(
        seed, kills, server_kind, writers, restarts, began=began, ended=ended
    )


def _first_commits(restarts: list[Restart], writers: list[Writer], end: float) -> None:
    """Set each restart's first commit: the earliest acknowledgement of a
    commit begun after the killed process was reaped and acknowledged
    before the next kill was sent."""
    acks = sorted(
        (ack for writer in writers for ack in writer.acks),
        key=lambda ack: ack.acknowledged,
    )
    times = [ack.acknowledged for ack in acks]
    for index, restart in enumerate(restarts):
        until = restarts[index + 1].kill_sent if index + 1 < len(restarts) else end
        for ack in acks[bisect.bisect_left(times, restart.killed) :]:
            if ack.acknowledged > until:
                break
            if ack.began >= restart.killed and ack.acknowledged >= restart.spawned:
                restart.first_commit = ack.acknowledged
                break


@dataclass(frozen=True)
class Verification:
    """What ``check_storage`` found, all of it as the writers expected."""

    #: Transactions in the file (fstest passed on it, and all iterate).
    transactions: int
    #: Acknowledged commits found with the value written.
    commits: int
    #: Acknowledged blob commits found with the blob written.
    blobs: int
    #: The size of Data.fs, in bytes.
    size: int


def check_storage(directory: Path, writers: list[Writer], seed: int) -> Verification:
    """Check ``directory/Data.fs`` against what the writers saw
    acknowledged (see the module's docstring)."""
    path = directory / "Data.fs"
    fstest.check(str(path))
    storage = FileStorage(str(path), blob_dir=str(directory / "blobs"), read_only=True)
    commits = blobs = 0
    try:
        # Every revision of every writer's object: value -> tid.
        revisions: dict[bytes, dict[int, bytes]] = {w.oid: {} for w in writers}
        tids = []
        for record in storage.iterator():
            tids.append(record.tid)
            for item in record:
                if item.oid in revisions and item.data is not None:
                    value = state_of(item.data)["value"]
                    revisions[item.oid][value] = record.tid
        assert tids == sorted(tids), seed
        for writer in writers:
            written = revisions[writer.oid]
            for value in writer.acknowledged:
                assert value in written, (writer.name, value, seed)
                commits += 1
                if writer.blobs:
                    blob = storage.loadBlob(writer.blob_oid, written[value])
                    with open(blob, "rb") as file:
                        assert file.read() == blob_content(writer.name, value), (
                            writer.name,
                            value,
                            seed,
                        )
                    blobs += 1
            current = state_of(storage.load(writer.oid)[0])
            assert current["value"] >= writer.acknowledged[-1], (writer.name, seed)
    finally:
        storage.close()
    return Verification(len(tids), commits, blobs, path.stat().st_size)


def state_of(data: bytes) -> Any:
    """The state of a record; a writer's PersistentMapping holds no
    references, so it unpickles without a database."""
    unpickler = pickle.Unpickler(io.BytesIO(data))
    unpickler.load()  # the class
    return unpickler.load()["data"]
