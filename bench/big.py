"""The big-database workloads of ``python -m bench.scaling --big``.

One FileStorage of ``BigSettings.objects`` objects (1,000,000 of the usual
~570-byte records in an ``OOBTree``: about 0.7 GB of ``Data.fs``) is built
once and copied for each server; ZEO 6 and ours are measured on their own
copy, one after the other.

``big_start_index``, ``big_start_noindex``
    A server process started on the database, with its ``Data.fs.index``
    and without it (the index is then rebuilt by reading the whole file):
    seconds until a new client has loaded the root; the server's VmRSS
    then.
``big_reconnect_short``, ``big_reconnect_long``
    A client with a persistent cache (``client``/``var``) that holds
    ``cached`` objects is closed; another client commits ``short`` (inside
    the server's invalidation queue) or ``long`` (past it) one-object
    transactions, each changing one of the cached objects; the client is
    opened again: seconds until it has served its first load, and the
    share of its cache's records (objects and BTree nodes) it kept.
``big_pack``
    This process commits one-object transactions in a thread, for
    ``idle_seconds`` and then for as long as a pack of the whole database
    (``pack(time.time())``, waited for) takes: pack seconds, the server's
    peak VmRSS during the pack (sampled every ``RSS_SAMPLE``), and commit
    p50/p99 during the pack against idle.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import dataclass
from typing import Any

import transaction
import ZODB
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from ZODB.FileStorage import FileStorage
from ZODB.serialize import referencesf
from ZODB.utils import z64

from .clients import open_storage
from .data import new_object
from .processes import Children, resident_kib, start_server

#: Objects per transaction while building the database.
BUILD_BATCH = 20_000
#: Seconds between two reads of the server's VmRSS during a pack.
RSS_SAMPLE = 0.2
#: How long a server may take to start without its index.
BIG_START_TIMEOUT = 600.0
MB = 1024 * 1024


@dataclass(frozen=True)
class BigSettings:
    objects: int
    cached: int
    short: int
    long: int
    idle_seconds: float


QUICK = BigSettings(objects=3000, cached=500, short=3, long=120, idle_seconds=0.5)
FULL = BigSettings(
    objects=1_000_000, cached=100_000, short=20, long=250, idle_seconds=3.0
)


def build(directory: str, settings: BigSettings) -> str:
    """The big database (with its index file); its ``Data.fs`` path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "Data.fs")
    db = ZODB.DB(FileStorage(path))
    try:
        manager = transaction.TransactionManager()
        conn = db.open(transaction_manager=manager)
        root = conn.root()
        root["counters"] = PersistentMapping({0: PersistentMapping({"n": 0})})
        tree = root["big"] = OOBTree()
        manager.commit()
        for start in range(0, settings.objects, BUILD_BATCH):
            for index in range(start, min(settings.objects, start + BUILD_BATCH)):
                tree[index] = new_object()
            manager.commit()
            conn.cacheMinimize()
        conn.close()
    finally:
        db.close()
    return path


def copy(path: str, directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, "Data.fs")
    shutil.copyfile(path, target)
    shutil.copyfile(path + ".index", target + ".index")
    return target


class BigServer:
    """One system's server on its own copy of the big database."""

    def __init__(
        self, children: Children, kind: str, client: str, path: str, work: str
    ) -> None:
        self.children = children
        self.kind = kind
        self.client = client
        self.path = path
        self.work = work
        self.child: Any = None
        self.address: Any = None
        #: The persistent client cache has been filled, and the records it
        #: held when its client last closed (objects and BTree nodes).
        self.cache_filled = False
        self.cached_records = 0

    def start(self) -> float:
        """Start the server; seconds until a new client has loaded the root."""
        self.stop()
        began = time.perf_counter()
        blob_dir = os.path.join(self.work, "blobs")
        self.child, self.address = start_server(
            self.children,
            self.kind,
            self.path,
            blob_dir,
            self.work,
            name=f"big-{self.kind}",
            timeout=BIG_START_TIMEOUT,
        )
        storage = open_storage(self.client, self.address, wait_timeout=600)
        try:
            storage.load(z64)
        finally:
            storage.close()
        return time.perf_counter() - began

    def ensure(self) -> None:
        if self.child is None or self.child.process.poll() is not None:
            self.start()

    def stop(self) -> None:
        if self.child is not None:
            self.children.reap(self.child)
            self.child = None

    def rss_mib(self) -> float:
        return resident_kib(self.child.pid) / 1024


def start(server: BigServer, index: bool) -> tuple[float, dict[str, float]]:
    server.stop()
    if not index:
        os.remove(server.path + ".index")
    seconds = server.start()
    return seconds, {"server_rss_MiB": server.rss_mib()}


def _cache_options(server: BigServer, settings: BigSettings) -> dict[str, Any]:
    return {
        "cache_name": f"big-{server.client}",
        "cache_dir": server.work,
        "cache_size": settings.cached * 2048 + 16 * MB,
    }


def _fill_cache(server: BigServer, settings: BigSettings) -> None:
    storage = open_storage(
        server.client, server.address, **_cache_options(server, settings)
    )
    db = ZODB.DB(storage, cache_size=1000)
    try:
        conn = db.open()
        tree = conn.root()["big"]
        for index in range(settings.cached):
            tree[index]["payload"]
            if index % 1000 == 999:
                conn.cacheMinimize()
        conn.close()
        server.cached_records = len(storage._cache)
    finally:
        db.close()


def _commit_outage(server: BigServer, commits: int, settings: BigSettings) -> None:
    """``commits`` one-object transactions, each changing a cached object."""
    db = ZODB.DB(open_storage(server.client, server.address))
    try:
        manager = transaction.TransactionManager()
        conn = db.open(transaction_manager=manager)
        tree = conn.root()["big"]
        step = max(1, settings.cached // max(commits, 1))
        for number in range(commits):
            tree[(number * step) % settings.cached]["payload"] = b"changed"
            manager.commit()
        conn.close()
    finally:
        db.close()


def reconnect(
    server: BigServer, settings: BigSettings, commits: int
) -> tuple[float, dict[str, float]]:
    server.ensure()
    if not server.cache_filled:
        _fill_cache(server, settings)
        server.cache_filled = True
    _commit_outage(server, commits, settings)
    began = time.perf_counter()
    storage = open_storage(
        server.client, server.address, **_cache_options(server, settings)
    )
    try:
        storage.load(z64)
        seconds = time.perf_counter() - began
        kept = len(storage._cache)
    finally:
        storage.close()
    before, server.cached_records = server.cached_records, kept
    return seconds, {
        "cache_kept": kept / before,
        "cached_objects": float(kept),
        "outage_commits": float(commits),
    }


def pack(server: BigServer, settings: BigSettings) -> tuple[float, dict[str, float]]:
    server.ensure()
    db = ZODB.DB(open_storage(server.client, server.address))
    packer = open_storage(server.client, server.address)
    phase = ["idle"]
    latencies: dict[str, list[float]] = {"idle": [], "pack": []}
    stop = threading.Event()
    errors: list[BaseException] = []

    def commit() -> None:
        try:
            manager = transaction.TransactionManager()
            conn = db.open(transaction_manager=manager)
            counter = conn.root()["counters"][0]
            while not stop.is_set():
                begin = time.perf_counter()
                counter["n"] += 1
                manager.commit()
                latencies[phase[0]].append(time.perf_counter() - begin)
            conn.close()
        except BaseException as error:  # reported below
            errors.append(error)

    committer = threading.Thread(target=commit, daemon=True)
    peak = server.rss_mib()
    try:
        committer.start()
        time.sleep(settings.idle_seconds)
        phase[0] = "pack"
        done = threading.Event()
        packed: list[float] = []

        def run_pack() -> None:
            try:
                began = time.perf_counter()
                packer.pack(time.time(), referencesf)
                packed.append(time.perf_counter() - began)
            except BaseException as error:  # reported below
                errors.append(error)
            finally:
                done.set()

        threading.Thread(target=run_pack, daemon=True).start()
        while not done.wait(RSS_SAMPLE):
            peak = max(peak, server.rss_mib())
        peak = max(peak, server.rss_mib())
    finally:
        stop.set()
        committer.join(60)
        packer.close()
        db.close()
    if errors:
        raise errors[0]
    idle, during = sorted(latencies["idle"]), sorted(latencies["pack"])

    def p(values: list[float], share: float) -> float:
        return values[min(len(values) - 1, int(len(values) * share))] * 1e3

    return packed[0], {
        "peak_server_rss_MiB": peak,
        "idle_p50_ms": p(idle, 0.5),
        "idle_p99_ms": p(idle, 0.99),
        "pack_p50_ms": p(during, 0.5),
        "pack_p99_ms": p(during, 0.99),
        "p99_ratio_pack_idle": p(during, 0.99) / p(idle, 0.99),
        "commits_during_pack": float(len(during)),
    }
