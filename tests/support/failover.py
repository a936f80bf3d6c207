"""Failover rounds: kill the primary under writers, promote, check, rejoin.

Two server processes over their own FileStorages with blobs, both with
``sync-replicas 1``: the primary, and a replica that follows it.  In each
round writers commit through the primary (each its own keys, every third
commit with a blob) and record every commit acknowledged to them; at a
random (seeded) instant the primary is SIGKILLed.  The replica is
promoted (``promote``), and every acknowledged commit -- value and blob --
must be on it.  Then the killed server rejoins (``zeoserver rejoin``,
which moves aside what it had of its own) and is started as the replica
of the new primary; the roles swap for the next round.  The short mode is
``tests/e2e/test_failover.py``; ``python -m stress.failover`` runs many.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import transaction
import ZODB
from BTrees.OOBTree import OOBTree
from ZODB.blob import Blob

from support.server_processes import ServerProcess
from support.waiting import wait_until
from zodbserver.client import ClientStorage
from zodbserver.peer_call import call

WRITERS = 3


@dataclass
class Writer:
    number: int
    acknowledged: list[int] = field(default_factory=list)
    #: Why its commits ended (the primary's death, normally).
    errors: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"writer {self.number}"


@dataclass
class Round:
    number: int
    killed_after: float
    acknowledged: int
    lost: list[str]
    promote_seconds: float
    rejoin_moved: bool


@dataclass
class Result:
    rounds: list[Round] = field(default_factory=list)

    @property
    def lost(self) -> list[str]:
        return [lost for r in self.rounds for lost in r.lost]


def _blob_bytes(writer: int, key: int) -> bytes:
    return f"blob of writer {writer}, commit {key} ".encode() * 200


def _write(
    address: Any, writer: Writer, stop: threading.Event, start: int, blob_dir: Path
) -> None:
    db = ZODB.DB(ClientStorage(address, wait_timeout=5, blob_dir=str(blob_dir)))
    manager = transaction.TransactionManager()
    conn = db.open(manager)
    try:
        key = start
        while not stop.is_set():
            try:
                tree = conn.root()[writer.key]
                tree[str(key)] = key
                if key % 3 == 0:
                    tree[f"blob {key}"] = Blob(_blob_bytes(writer.number, key))
                manager.commit()
            except Exception as error:
                writer.errors.append(repr(error)[:200])
                manager.abort()
                return
            writer.acknowledged.append(key)
            key += 1
    finally:
        conn.close()
        db.close()


def _missing(address: Any, writers: list[Writer], blob_dir: Path) -> list[str]:
    """The acknowledged commits the server at ``address`` does not have."""
    db = ZODB.DB(ClientStorage(address, wait_timeout=30, blob_dir=str(blob_dir)))
    lost: list[str] = []
    try:
        with db.transaction() as conn:
            root = conn.root()
            for writer in writers:
                tree = root[writer.key]
                for key in writer.acknowledged:
                    if tree.get(str(key)) != key:
                        lost.append(f"{writer.key} commit {key}")
                    if key % 3 == 0:
                        blob = tree.get(f"blob {key}")
                        if blob is None:
                            lost.append(f"{writer.key} blob {key}")
                            continue
                        with blob.open() as stream:
                            if stream.read() != _blob_bytes(writer.number, key):
                                lost.append(f"{writer.key} blob {key} differs")
    finally:
        db.close()
    return lost


class Pair:
    """The two servers, and which is primary."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.servers = [
            ServerProcess("ours", directory / name, blobs=True) for name in ("a", "b")
        ]
        for server in self.servers:
            server.directory.mkdir(parents=True)
        self.primary, self.replica = self.servers

    def configure(self) -> None:
        replica, primary = self.replica, self.primary
        primary.zeo_lines = ("sync-replicas 1", "sync-replicas-timeout 10s")
        replica.zeo_lines = (
            *primary.zeo_lines,
            f"replicate-from {primary.address[0]}:{primary.address[1]}",
        )

    def swap(self) -> None:
        self.primary, self.replica = self.replica, self.primary

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def _following(primary: ServerProcess) -> bool:
    status = call(primary.address, "replication_status")
    return any(r["state"] == "following" for r in status["storages"]["1"]["replicas"])


def _rejoin(server: ServerProcess) -> bool:
    """``zeoserver rejoin`` for a stopped server; whether it moved any
    transactions aside."""
    conf = server.directory / "ours-server.conf"
    server._argv()  # writes the configuration with the current zeo_lines
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "zodbserver.cli",
            "-C",
            str(conf),
            "--var",
            str(server.directory / "var"),
            "rejoin",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        raise AssertionError(f"rejoin failed: {completed.stdout}{completed.stderr}")
    return "moving them to" in completed.stdout


def run_failover(directory: Path, rounds: int, seed: int) -> Result:
    chance = random.Random(seed)
    pair = Pair(directory)
    result = Result()
    try:
        pair.configure()
        pair.primary.start()
        pair.replica.start()
        wait_until(
            lambda: _following(pair.primary), "the replica to follow", timeout=30
        )
        db = ZODB.DB(ClientStorage(pair.primary.address, wait_timeout=30))
        with db.transaction() as conn:
            for number in range(WRITERS):
                conn.root()[f"writer {number}"] = OOBTree()
        db.close()
        writers = [Writer(number) for number in range(WRITERS)]
        for number in range(rounds):
            result.rounds.append(_round(number, pair, writers, chance))
    finally:
        pair.stop()
    return result


def _round(
    number: int, pair: Pair, writers: list[Writer], chance: random.Random
) -> Round:
    primary, replica = pair.primary, pair.replica
    before = sum(len(writer.acknowledged) for writer in writers)
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_write,
            args=(
                primary.address,
                writer,
                stop,
                1_000_000 * (number + 1),
                pair.directory / f"blobs-{number}-{writer.number}",
            ),
            daemon=True,
        )
        for writer in writers
    ]
    for thread in threads:
        thread.start()
    delay = chance.uniform(0.3, 1.5)
    time.sleep(delay)
    primary.kill()
    stop.set()
    for thread in threads:
        thread.join(60)
    began = time.monotonic()
    call(replica.address, "promote", seconds=60.0)
    promote_seconds = time.monotonic() - began
    lost = _missing(replica.address, writers, pair.directory / f"check-{number}")
    acknowledged = sum(len(writer.acknowledged) for writer in writers) - before
    # The old primary rejoins as the new primary's replica.
    pair.swap()
    pair.configure()
    moved = _rejoin(pair.replica)
    pair.replica.start()
    # Its sync-replicas holds the new primary's commits until it follows.
    wait_until(lambda: _following(pair.primary), "the rejoined replica", timeout=60)
    return Round(number, delay, acknowledged, lost, promote_seconds, moved)
