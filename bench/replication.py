"""What replication costs commits, how far replicas lag, how fast they catch up.

::

    .venv/bin/python -m bench.replication [--runs 3] [--commit-seconds 3]
        [--catchup 20000] [--quick] [--output bench/results/replication]

Four systems, each a fresh copy of one seed database, all driven by ZEO 6's
client (so that only the servers differ):

| key | server |
|---|---|
| `zeo` (the baseline) | ZEO 6, no replica |
| `none` | ours, no replica |
| `async` | ours, with one replica following |
| `sync` | ours, with one replica and `sync-replicas 1` |

``commits_1`` and ``commits_4`` are ``python -m bench``'s: 1 and 4 worker
processes (``bench/worker.py``) commit one-object transactions for
``--commit-seconds``; commits/s and p50/p99 latency, with the ratio to
``zeo``.  During ``commits_4`` the primary's replication status is sampled
every 20 ms: the replica's lag in seconds (the time of the primary's last
transaction minus that of the last one the replica confirmed), p50 and
p99.  ``catchup``: a replica started empty against a primary holding
``--catchup`` transactions, timed until it has the last one.  Systems run
in turn, ``--runs`` rounds; the tables give medians.  Writes
``RESULTS.md`` and ``results.json`` into ``--output``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import transaction
import ZODB
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from ZODB.FileStorage import FileStorage

from bench.processes import Children, free_port, wait_listening
from bench.report import machine
from bench.workloads import commit_latencies
from zodbserver.peer_call import call

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "replication"
SYSTEMS = ("zeo", "none", "async", "sync")
START_TIMEOUT = 60.0
WORKERS = 16


def _conf(directory: Path, port: int, lines: Sequence[str]) -> Path:
    conf = directory / "server.conf"
    zeo = "".join(f"  {line}\n" for line in (f"address 127.0.0.1:{port}", *lines))
    conf.write_text(
        f"<zeo>\n{zeo}</zeo>\n<filestorage 1>\n  path {directory / 'Data.fs'}\n"
        f"  blob-dir {directory / 'blobs'}\n</filestorage>\n"
    )
    return conf


class Servers:
    """The servers of one system, over copies of the seed."""

    def __init__(self, children: Children, work: Path, seed: Path, system: str):
        self.children = children
        self.started: list[Any] = []
        primary_dir = work / f"{system}-primary"
        shutil.copytree(seed, primary_dir)
        port = free_port()
        self.address = ("127.0.0.1", port)
        lines = ["sync-replicas 1"] if system == "sync" else []
        conf = _conf(primary_dir, port, lines)
        if system == "zeo":
            argv = [sys.executable, "-m", "ZEO.runzeo", "-C", str(conf)]
        else:
            argv = self._ours(conf, primary_dir)
        self._start(argv, f"{system}-primary", self.address)
        self.replica: tuple[str, int] | None = None
        if system in ("async", "sync"):
            self.replica = self.add_replica(work / f"{system}-replica", seed)

    @staticmethod
    def _ours(conf: Path, directory: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "zodbserver.cli",
            "-C",
            str(conf),
            "--var",
            str(directory / "var"),
            "fg",
        ]

    def _start(self, argv: list[str], name: str, address: tuple[str, int]) -> None:
        child = self.children.start(argv, name)
        self.started.append(child)
        wait_listening(child, address, START_TIMEOUT)

    def add_replica(self, directory: Path, seed: Path | None) -> tuple[str, int]:
        if seed is not None:
            shutil.copytree(seed, directory)
        else:
            directory.mkdir()
        port = free_port()
        host, primary_port = self.address
        conf = _conf(directory, port, [f"replicate-from {host}:{primary_port}"])
        address = ("127.0.0.1", port)
        self._start(self._ours(conf, directory), directory.name, address)
        _wait(lambda: _following(self.address), "the replica to follow")
        return address

    def close(self) -> None:
        for child in reversed(self.started):
            self.children.reap(child)


def _wait(predicate: Any, what: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waiting for {what}")
        time.sleep(0.02)


def _following(address: tuple[str, int]) -> bool:
    status = call(address, "replication_status")
    return any(r["state"] == "following" for r in status["storages"]["1"]["replicas"])


def _seed(directory: Path, transactions: int) -> Path:
    directory.mkdir()
    storage = FileStorage(str(directory / "Data.fs"), blob_dir=str(directory / "blobs"))
    db = ZODB.DB(storage)
    with db.transaction() as conn:
        root = conn.root()
        root["counters"] = [PersistentMapping(n=0) for _ in range(WORKERS)]
        root["tree"] = OOBTree()
    conn = db.open()
    tree = conn.root()["tree"]
    for number in range(transactions):
        tree[str(number)] = "x" * 500
        transaction.commit()
    conn.close()
    db.close()
    return directory


def _commits(
    children: Children, address: tuple[str, int], clients: int, seconds: float
) -> list[float]:
    workers = [
        children.start(
            [
                sys.executable,
                "-m",
                "bench.worker",
                "commit",
                "zeo",
                json.dumps(list(address)),
                str(index),
            ],
            f"worker-{index}",
        )
        for index in range(clients)
    ]
    return commit_latencies(children, workers, seconds)


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _sample_lag(
    address: tuple[str, int], stop: threading.Event, samples: list[float]
) -> None:
    while not stop.is_set():
        status = call(address, "replication_status")
        for replica in status["storages"]["1"]["replicas"]:
            samples.append(float(replica["lag_seconds"]))
        time.sleep(0.02)


def measure(options: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-replication-"))
    children = Children(str(work))
    results: dict[str, Any] = {s: {"commits_1": [], "commits_4": []} for s in SYSTEMS}
    lags: dict[str, list[float]] = {"async": [], "sync": []}
    catchups: list[float] = []
    try:
        seed = _seed(work / "seed", 10)
        for round_number in range(options.runs):
            for system in SYSTEMS:
                servers = Servers(
                    children, work / f"round-{round_number}", seed, system
                )
                try:
                    for clients in (1, 4):
                        stop = threading.Event()
                        sampled: list[float] = []
                        sampler = None
                        if clients == 4 and servers.replica is not None:
                            sampler = threading.Thread(
                                target=_sample_lag,
                                args=(servers.address, stop, sampled),
                            )
                            sampler.start()
                        latencies = _commits(
                            children, servers.address, clients, options.commit_seconds
                        )
                        stop.set()
                        if sampler is not None:
                            sampler.join()
                            lags[system].extend(sampled)
                        results[system][f"commits_{clients}"].append(
                            {
                                "per_second": len(latencies) / options.commit_seconds,
                                "p50_ms": _percentile(latencies, 0.5) * 1000,
                                "p99_ms": _percentile(latencies, 0.99) * 1000,
                            }
                        )
                finally:
                    servers.close()
            print(f"round {round_number + 1} of {options.runs} done", file=sys.stderr)
        big = _seed(work / "big-seed", options.catchup)
        servers = Servers(children, work / "catchup", big, "none")
        try:
            began = time.monotonic()
            servers.add_replica(work / "catchup" / "empty-replica", None)
            catchups.append(time.monotonic() - began)
        finally:
            servers.close()
    finally:
        children.close()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "results": results,
        "lags": lags,
        "catchup_seconds": catchups,
        "catchup_transactions": options.catchup + 2,
        "machine": machine(),
        "load": os.getloadavg(),
        "runs": options.runs,
        "commit_seconds": options.commit_seconds,
    }


def report(data: dict[str, Any]) -> str:
    results = data["results"]
    lines = [
        "# Replication: the cost to commits, the lag, the catch-up",
        "",
        f"ZEO 6's client against each server; {data['runs']} rounds of "
        f"{data['commit_seconds']} s per workload; medians; ratio = ours / "
        "ZEO 6 (above 1 is better for commits/s, below 1 for latencies).",
        "",
        "| workload | system | commits/s | ratio | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for workload in ("commits_1", "commits_4"):
        base = statistics.median(r["per_second"] for r in results["zeo"][workload])
        for system in SYSTEMS:
            runs = results[system][workload]
            rate = statistics.median(r["per_second"] for r in runs)
            p50 = statistics.median(r["p50_ms"] for r in runs)
            p99 = statistics.median(r["p99_ms"] for r in runs)
            lines.append(
                f"| {workload} | {system} | {rate:.0f} | {rate / base:.2f} | "
                f"{p50:.2f} | {p99:.2f} |"
            )
    lines += [
        "",
        "| replica lag under commits_4 | p50 | p99 | samples |",
        "|---|---|---|---|",
    ]
    for system, samples in data["lags"].items():
        if samples:
            lines.append(
                f"| {system} | {_percentile(samples, 0.5) * 1000:.1f} ms | "
                f"{_percentile(samples, 0.99) * 1000:.1f} ms | {len(samples)} |"
            )
    seconds = statistics.median(data["catchup_seconds"])
    count = data["catchup_transactions"]
    lines += [
        "",
        f"Catch-up: an empty replica took {seconds:.1f} s for {count} "
        f"transactions ({count / seconds:.0f} transactions/s), from its start "
        "to following.",
        "",
        "Lag is measured on the transactions' own times (the primary's last "
        "minus the replica's last confirmed), sampled every 20 ms; a sample "
        "of 0 means the replica had everything.",
        "",
        f"Machine: {data['machine']['cpu_model']}, {data['machine']['cores']} "
        f"cores, {data['machine']['ram_gib']} GiB; load average at the end "
        + " / ".join(f"{x:.2f}" for x in data["load"])
        + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replication")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--commit-seconds", type=float, default=3.0)
    parser.add_argument("--catchup", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="1 short run")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    options = parser.parse_args(argv)
    if options.quick:
        options.runs, options.commit_seconds, options.catchup = 1, 0.5, 200
    data = measure(options)
    text = report(data)
    print(text)
    options.output.mkdir(parents=True, exist_ok=True)
    (options.output / "RESULTS.md").write_text(text)
    (options.output / "results.json").write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
