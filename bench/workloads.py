"""The workloads, zodbshootout-style, each measured once per call.

A workload is a function ``(system, context) -> Measurement``; it opens its
own clients and closes them before returning, so measurements do not share
caches unless the workload says so:

* ``cold_read``: a new client (empty client cache) and a new connection;
* ``warm_read``: the client cache primed by one read, the object cache
  emptied (``cacheMinimize``) so every object is loaded from the client;
* ``hot_read``: the objects already unpickled in the connection;
* ``load_before``: ``storage.loadBefore(oid, last_tid + 1)`` called directly
  on a new client that has never loaded those oids, so each call is a round
  trip to the server (no cache to disable: it is empty);
* ``commits_N``: N worker processes (N threads for the FileStorage floor)
  commit one-object transactions for a fixed time;
* ``restart_read``: a client whose persistent cache file was filled by an
  earlier run starts, connects and reads ``restart_count`` objects;
* ``server_rss``: the server's VmRSS while ``rss_clients`` worker processes
  are connected and have read every object.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import transaction
from persistent.mapping import PersistentMapping
from ZODB.blob import Blob
from ZODB.utils import p64, u64

from .clients import FILESTORAGE
from .data import Seed, blob_key, new_object, payload, write_random
from .processes import START_TIMEOUT, Child, Children, resident_kib
from .systems import System

MB = 1024 * 1024
#: Settle time between the clients connecting and reading the server's RSS.
RSS_SETTLE = 0.5


@dataclass(frozen=True)
class Settings:
    count: int
    restart_count: int
    transactions: dict[int, int]  # objects per transaction -> transactions
    commit_duration: float
    rss_clients: int


@dataclass
class Context:
    settings: Settings
    seed: Seed
    oids: list[bytes]
    children: Children


@dataclass
class Measurement:
    value: float
    extras: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    unit: str
    better: str  # "lower" or "higher"
    measure: Callable[[System, Context], Measurement]
    #: Skipped by ``--quick`` and ``--big-blobs`` decides about the 100 MB.
    quick: bool = True
    big: bool = False


def _read_all(container: Any) -> None:
    for item in container.values():
        item["payload"]


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def _percentiles_ms(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    if not ordered:
        return {}
    return {
        "p50_ms": _ms(ordered[len(ordered) // 2]),
        "p99_ms": _ms(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]),
    }


def _open(db: Any) -> tuple[Any, transaction.TransactionManager]:
    manager = transaction.TransactionManager()
    return db.open(transaction_manager=manager), manager


# -- writes ------------------------------------------------------------------


def add(system: System, context: Context) -> Measurement:
    with system.database() as db:
        conn, manager = _open(db)
        adds = conn.root()["adds"]
        adds._p_activate()
        start = time.perf_counter()
        container = PersistentMapping()
        for index in range(context.settings.count):
            container[index] = new_object()
        adds[system.unique("add")] = container
        manager.commit()
        elapsed = time.perf_counter() - start
        conn.close()
    return Measurement(_ms(elapsed))


def update(system: System, context: Context) -> Measurement:
    with system.database() as db:
        conn, manager = _open(db)
        container = conn.root()["objects"]
        _read_all(container)
        start = time.perf_counter()
        for item in container.values():
            item["payload"] = payload()
        manager.commit()
        elapsed = time.perf_counter() - start
        conn.close()
    return Measurement(_ms(elapsed))


def transactions_of(size: int) -> Callable[[System, Context], Measurement]:
    def measure(system: System, context: Context) -> Measurement:
        with system.database() as db:
            conn, manager = _open(db)
            container = conn.root()["objects"]
            items = [container[index] for index in range(size)]
            for item in items:
                item["payload"]
            latencies = []
            for _ in range(context.settings.transactions[size]):
                start = time.perf_counter()
                for item in items:
                    item["payload"] = payload()
                manager.commit()
                latencies.append(time.perf_counter() - start)
            conn.close()
        return Measurement(_ms(statistics.mean(latencies)), _percentiles_ms(latencies))

    return measure


# -- reads -------------------------------------------------------------------


def cold_read(system: System, context: Context) -> Measurement:
    with system.database() as db:
        conn, _ = _open(db)
        start = time.perf_counter()
        _read_all(conn.root()["objects"])
        elapsed = time.perf_counter() - start
        conn.close()
    return Measurement(_ms(elapsed))


def warm_read(system: System, context: Context) -> Measurement:
    with system.database() as db:
        conn, _ = _open(db)
        _read_all(conn.root()["objects"])
        conn.cacheMinimize()
        start = time.perf_counter()
        _read_all(conn.root()["objects"])
        elapsed = time.perf_counter() - start
        conn.close()
    return Measurement(_ms(elapsed))


def hot_read(system: System, context: Context) -> Measurement:
    with system.database() as db:
        conn, _ = _open(db)
        container = conn.root()["objects"]
        _read_all(container)
        start = time.perf_counter()
        _read_all(container)
        elapsed = time.perf_counter() - start
        conn.close()
    return Measurement(_ms(elapsed))


def load_before(system: System, context: Context) -> Measurement:
    storage = system.open()
    try:
        before = p64(u64(storage.lastTransaction()) + 1)
        latencies = []
        for oid in context.oids:
            start = time.perf_counter()
            result = storage.loadBefore(oid, before)
            latencies.append(time.perf_counter() - start)
            assert result is not None, oid
    finally:
        storage.close()
    return Measurement(
        len(latencies) / sum(latencies),
        {**_percentiles_ms(latencies), "operations": len(latencies)},
    )


def restart_read(system: System, context: Context) -> Measurement:
    cache = {"cache_name": system.key, "cache_dir": system.work_dir}
    if system.client == FILESTORAGE:
        cache = {}
    elif not system.state.get("persistent_cache_filled"):
        with system.database(**cache) as db:
            conn, _ = _open(db)
            _read_all(conn.root()["restart"])
            conn.close()
        system.state["persistent_cache_filled"] = True
    start = time.perf_counter()
    with system.database(**cache) as db:
        conn, _ = _open(db)
        _read_all(conn.root()["restart"])
        elapsed = time.perf_counter() - start
        conn.close()
    return Measurement(_ms(elapsed))


# -- blobs -------------------------------------------------------------------


def blob_write(size: int) -> Callable[[System, Context], Measurement]:
    def measure(system: System, context: Context) -> Measurement:
        blob_cache = system.fresh_dir("blob-cache")
        try:
            with system.database(blob_dir=blob_cache) as db:
                conn, manager = _open(db)
                writes = conn.root()["blob_writes"]
                writes._p_activate()
                start = time.perf_counter()
                blob = Blob()
                with blob.open("w") as file:
                    write_random(file, size)
                writes[system.unique("blob")] = blob
                manager.commit()
                elapsed = time.perf_counter() - start
                conn.close()
        finally:
            shutil.rmtree(blob_cache, ignore_errors=True)
        return Measurement(_ms(elapsed), {"MB_per_s": size / MB / elapsed})

    return measure


def blob_read(size: int) -> Callable[[System, Context], Measurement]:
    def measure(system: System, context: Context) -> Measurement:
        blob_cache = system.fresh_dir("blob-cache")
        try:
            with system.database(blob_dir=blob_cache) as db:
                conn, _ = _open(db)
                root = conn.root()
                root._p_activate()
                # Loading the blob's state is what downloads its file.
                start = time.perf_counter()
                blob = root[blob_key(size)]
                read = 0
                with blob.open("r") as file:
                    while chunk := file.read(MB):
                        read += len(chunk)
                elapsed = time.perf_counter() - start
                assert read == size, (read, size)
                conn.close()
        finally:
            shutil.rmtree(blob_cache, ignore_errors=True)
        return Measurement(_ms(elapsed), {"MB_per_s": size / MB / elapsed})

    return measure


# -- several clients ---------------------------------------------------------


def _worker(context: Context, system: System, mode: str, index: int) -> Child:
    argv = [
        sys.executable,
        "-m",
        "bench.worker",
        mode,
        system.client,
        json.dumps(system.target),
        str(index),
    ]
    return context.children.start(argv, f"{system.key}-{mode}-{index}")


def commits(clients: int) -> Callable[[System, Context], Measurement]:
    def measure(system: System, context: Context) -> Measurement:
        duration = context.settings.commit_duration
        if system.client == FILESTORAGE:
            latencies = _thread_commits(system, clients, duration)
        else:
            latencies = _process_commits(system, context, clients, duration)
        return Measurement(
            len(latencies) / duration,
            {**_percentiles_ms(latencies), "operations": len(latencies)},
        )

    return measure


def _process_commits(
    system: System, context: Context, clients: int, duration: float
) -> list[float]:
    workers = [_worker(context, system, "commit", index) for index in range(clients)]
    return commit_latencies(context.children, workers, duration)


def commit_latencies(
    children: Children, workers: list[Child], duration: float
) -> list[float]:
    """Start ``commit`` workers together, for ``duration``; every commit's
    latency.  The workers are reaped."""
    try:
        for worker in workers:
            worker.expect("READY", START_TIMEOUT)
        for worker in workers:
            worker.send(f"GO {duration}")
        latencies: list[float] = []
        for worker in workers:
            result = json.loads(worker.expect("RESULT", duration + START_TIMEOUT))
            latencies.extend(result["latencies"])
        return latencies
    finally:
        for worker in workers:
            children.reap(worker)


def _thread_commits(system: System, clients: int, duration: float) -> list[float]:
    latencies: list[float] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients)

    def commit_loop(db: Any, index: int) -> None:
        try:
            conn, manager = _open(db)
            counter = conn.root()["counters"][index]
            counter["n"] += 1
            manager.commit()
            barrier.wait(START_TIMEOUT)
            mine = []
            deadline = time.perf_counter() + duration
            while (start := time.perf_counter()) < deadline:
                counter["n"] += 1
                manager.commit()
                mine.append(time.perf_counter() - start)
            latencies.extend(mine)
            conn.close()
        except BaseException as error:  # reported by the caller
            errors.append(error)
            barrier.abort()

    with system.database(pool_size=clients) as db:
        threads = [
            threading.Thread(target=commit_loop, args=(db, index), daemon=True)
            for index in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(duration + START_TIMEOUT)
    if errors:
        raise errors[0]
    return latencies


def server_rss(system: System, context: Context) -> Measurement:
    """The server's resident memory with clients connected, in MiB."""
    if system.client == FILESTORAGE:
        # The floor: one process holding the FileStorage with every object read.
        worker = _worker(context, system, "hold", 0)
        try:
            worker.expect("READY", START_TIMEOUT)
            return Measurement(resident_kib(worker.pid) / 1024)
        finally:
            context.children.reap(worker)
    assert system.server_pid is not None
    idle = resident_kib(system.server_pid) / 1024
    clients = context.settings.rss_clients
    workers = [_worker(context, system, "hold", index) for index in range(clients)]
    try:
        for worker in workers:
            worker.expect("READY", START_TIMEOUT)
        time.sleep(RSS_SETTLE)
        loaded = resident_kib(system.server_pid) / 1024
    finally:
        for worker in workers:
            context.children.reap(worker)
    return Measurement(loaded, {"before_clients_MiB": idle})


def all_workloads(settings: Settings) -> list[Workload]:
    """Every workload, in the order they run."""
    count = settings.count
    workloads = [
        Workload("add", f"add {count} objects in one transaction", "ms", "lower", add),
        Workload(
            "update",
            f"update {count} objects in one transaction",
            "ms",
            "lower",
            update,
        ),
        Workload(
            "cold_read",
            f"read {count} objects, new client and connection",
            "ms",
            "lower",
            cold_read,
        ),
        Workload(
            "warm_read",
            f"read {count} objects, client cache warm, object cache cold",
            "ms",
            "lower",
            warm_read,
        ),
        Workload(
            "hot_read",
            f"read {count} objects, object cache hot",
            "ms",
            "lower",
            hot_read,
        ),
        Workload(
            "load_before",
            f"loadBefore round trips on {count} uncached oids",
            "calls/s",
            "higher",
            load_before,
        ),
    ]
    for size, number in settings.transactions.items():
        workloads.append(
            Workload(
                f"txn_{size}",
                f"transaction of {size} objects (mean of {number})",
                "ms",
                "lower",
                transactions_of(size),
            )
        )
    for clients in (1, 4, 16):
        workloads.append(
            Workload(
                f"commits_{clients}",
                f"one-object commits, {clients} client processes",
                "commits/s",
                "higher",
                commits(clients),
                quick=clients < 16,
            )
        )
    for size, label in ((MB, "1mb"), (100 * MB, "100mb")):
        big = size > MB
        workloads += [
            Workload(
                f"blob_write_{label}",
                f"commit one {label.upper()} blob",
                "ms",
                "lower",
                blob_write(size),
                quick=not big,
                big=big,
            ),
            Workload(
                f"blob_read_{label}",
                f"read one {label.upper()} blob, empty blob cache",
                "ms",
                "lower",
                blob_read(size),
                quick=not big,
                big=big,
            ),
        ]
    workloads += [
        Workload(
            "restart_read",
            f"restart with a persistent cache, read {settings.restart_count} objects",
            "ms",
            "lower",
            restart_read,
        ),
        Workload(
            "server_rss",
            f"server VmRSS, {settings.rss_clients} clients connected",
            "MiB",
            "lower",
            server_rss,
        ),
    ]
    return workloads
