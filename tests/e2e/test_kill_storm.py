"""A storm of ``kill -9``: writers keep committing while the server dies.

Four writers commit continuously, two through ZEO 6's client and two
through ours, one of each also writing a blob in every transaction; each
writer owns its objects, so no commit conflicts with another.  Meanwhile
the server process is SIGKILLed and restarted on the same port at random
(seeded) instants.  Afterwards:

- every commit a writer saw acknowledged (``commit()`` returned) is in the
  storage with the value and blob it wrote;
- each writer's object holds its last acknowledged value or a later one
  (a commit whose answer was lost with the server may have landed);
- no writer is stuck: each commits again soon after the last restart;
- the file passes ``fstest`` and every transaction iterates.

The default run is short (30 kills).  ``ZODBSERVER_KILL_STORM=N`` runs N
kills (the long run belongs to the hardening work), and
``ZODBSERVER_KILL_STORM_SEED`` replays the instants of a failed run.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import threading
import time
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

KILLS = int(os.environ.get("ZODBSERVER_KILL_STORM", "30"))
SEED = int(os.environ.get("ZODBSERVER_KILL_STORM_SEED", str(random.randrange(1 << 30))))
#: How long a writer may take to commit once the server is back.
RECOVERY = 60.0
WRITERS = (("ours", False), ("ours", True), ("zeo", False), ("zeo", True))


@dataclass
class Writer:
    """One thread committing ``value`` (and a blob) to its own objects."""

    name: str
    kind: str
    blobs: bool
    db: Any
    #: The value of every acknowledged commit, in order.
    acknowledged: list[int] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    oid: bytes = b""
    blob_oid: bytes = b""
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

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
                manager.commit()
                self.acknowledged.append(value)
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


def test_acknowledged_commits_survive_a_storm_of_kills(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    server = ServerProcess("ours", tmp_path, blobs=True)
    writers: list[Writer] = []
    with server:
        server.start()
        try:
            for number, (kind, blobs) in enumerate(WRITERS):
                name = f"{kind}-{'blob' if blobs else 'plain'}-{number}"
                db = open_db(kind, server.address, tmp_path / f"cache-{name}")
                writer = Writer(name, kind, blobs, db)
                writers.append(writer)
                writer.setup()
            for writer in writers:
                writer.start()
            for _ in range(KILLS):
                time.sleep(rng.uniform(0.05, 0.8))
                server.kill()
                time.sleep(rng.uniform(0.0, 0.3))
                server.start()
            # No writer is stuck: each commits twice more after the last
            # restart.
            counts = {writer.name: len(writer.acknowledged) for writer in writers}
            for writer in writers:
                wait_until(
                    lambda w=writer: len(w.acknowledged) >= counts[w.name] + 2,
                    f"{writer.name} to commit after the storm (seed {SEED}, "
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
        assert server.stop() == 0, server.log()

    for writer in writers:
        assert writer.acknowledged, (writer.name, writer.failures)
    check_storage(tmp_path, writers)


def check_storage(directory: Path, writers: list[Writer]) -> None:
    path = directory / "Data.fs"
    fstest.check(str(path))
    storage = FileStorage(str(path), blob_dir=str(directory / "blobs"), read_only=True)
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
        assert tids == sorted(tids)
        for writer in writers:
            written = revisions[writer.oid]
            for value in writer.acknowledged:
                assert value in written, (writer.name, value, SEED)
                if writer.blobs:
                    blob = storage.loadBlob(writer.blob_oid, written[value])
                    with open(blob, "rb") as file:
                        assert file.read() == blob_content(writer.name, value)
            current = state_of(storage.load(writer.oid)[0])
            assert current["value"] >= writer.acknowledged[-1], (writer.name, SEED)
    finally:
        storage.close()


def state_of(data: bytes) -> Any:
    """The state of a record; a writer's PersistentMapping holds no
    references, so it unpickles without a database."""
    unpickler = pickle.Unpickler(io.BytesIO(data))
    unpickler.load()  # the class
    return unpickler.load()["data"]
