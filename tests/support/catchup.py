"""A replica catching up from empty, killed on the way and while following.

``build_database`` writes N transactions (records of a few hundred bytes,
a blob in every hundredth) straight into a FileStorage; ``run_catchup``
serves it from a primary process, starts a replica process from an empty
storage, SIGKILLs the replica once it is part-way through (``kill_at``)
and again while it follows a writer, restarts it each time, and returns
the timings and the peak resident memory of both processes.  Afterwards
the two files must hold the same transactions (``same_history``): no gap,
no duplicate.  Short in ``tests/e2e/test_replica_catchup.py``; long (and
measured) in ``python -m stress.replica_catchup``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import transaction
import ZODB
from BTrees.OOBTree import OOBTree
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage

from support.replicas import last_tid, replication_status
from support.server_processes import ServerProcess
from support.waiting import wait_until
from zodbserver.client import ClientStorage


@dataclass
class CatchUp:
    transactions: int
    data_bytes: int
    #: From the replica's (re)start after the kill to having everything.
    seconds: float
    #: Transactions it applied in that time.
    applied: int
    #: Peak resident memory (kB) of the primary and of the replica.
    primary_peak_kb: int
    replica_peak_kb: int
    kills: int


def build_database(directory: Path, transactions: int) -> int:
    """Write ``transactions`` commits into ``directory/Data.fs``; its size."""
    directory.mkdir(parents=True, exist_ok=True)
    storage = FileStorage(str(directory / "Data.fs"), blob_dir=str(directory / "blobs"))
    db = ZODB.DB(storage)
    try:
        with db.transaction() as conn:
            conn.root()["tree"] = OOBTree()
        conn = db.open()
        tree = conn.root()["tree"]
        for number in range(transactions - 1):
            tree[str(number)] = "x" * 200 + str(number)
            if number % 100 == 0:
                tree[f"blob {number}"] = Blob(f"blob {number} ".encode() * 1000)
            transaction.commit()
        conn.close()
    finally:
        db.close()
    return os.path.getsize(directory / "Data.fs")


def _peak(server: ServerProcess) -> int:
    try:
        return server.proc_status("VmHWM")
    except (LookupError, OSError):
        return 0


def _tid(address: object) -> str:
    try:
        return last_tid(address)
    except Exception:
        return ""


def run_catchup(directory: Path, transactions: int, kill_at: float = 0.3) -> CatchUp:
    size = build_database(directory / "primary", transactions)
    primary = ServerProcess("ours", directory / "primary", blobs=True)
    replica = ServerProcess("ours", directory / "replica", blobs=True)
    (directory / "replica").mkdir()
    replica.zeo_lines = (f"replicate-from {primary.address[0]}:{primary.address[1]}",)
    kills = 0
    try:
        primary.start()
        target = last_tid(primary.address)
        replica.start()
        # Killed part-way through the catch-up ...
        wait_until(
            lambda: _applied(replica) >= kill_at * transactions,
            "the replica to be part-way",
            timeout=600,
        )
        replica_peak = _peak(replica)
        replica.kill()
        kills += 1
        began = time.monotonic()
        replica.start()
        wait_until(
            lambda: _tid(replica.address) == target, "the catch-up", timeout=1200
        )
        seconds = time.monotonic() - began
        applied = _applied(replica)
        replica_peak = max(replica_peak, _peak(replica))
        # ... and while following a writer.
        stop = threading.Event()
        writer = threading.Thread(target=_write, args=(primary.address, stop))
        writer.start()
        try:
            time.sleep(0.5)
            replica.kill()
            kills += 1
            time.sleep(0.3)
            replica.start()
            time.sleep(0.5)
        finally:
            stop.set()
            writer.join(60)
        wait_until(
            lambda: _tid(replica.address) == _tid(primary.address),
            "the replica to catch up again",
            timeout=120,
        )
        primary_peak = _peak(primary)
        replica_peak = max(replica_peak, _peak(replica))
    finally:
        replica.stop()
        primary.stop()
    return CatchUp(
        transactions, size, seconds, applied, primary_peak, replica_peak, kills
    )


def _applied(replica: ServerProcess) -> int:
    """Transactions the replica has applied since it started (0: not yet
    answering)."""
    try:
        status = replication_status(replica.address)
    except Exception:
        return 0
    primary = status["storages"]["1"]["primary"]
    return 0 if primary is None else int(primary["applied"])


def _write(address: object, stop: threading.Event) -> None:
    db = ZODB.DB(ClientStorage(address, wait_timeout=30))
    try:
        number = 0
        while not stop.is_set():
            with db.transaction() as conn:
                conn.root()[f"following {number}"] = number
            number += 1
    finally:
        db.close()
