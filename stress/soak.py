"""Soak: many concurrent clients for minutes; errors, memory, fds, latencies.

::

    .venv/bin/python -m stress.soak [--clients 64] [--minutes 10] [--seed S]
        [--interval 5] [--items 4000] [--clients-per-process 8]
        [--directory DIR] [--keep] [--output stress/results/soak.md]
        [--plot stress/results/soak.png | --no-plot]

What it does
------------

1. Starts our server as a child process (``python -m zodbserver.cli -C
   zeo.conf fg``: a FileStorage with a blob directory in a temporary
   directory, ``monitor-address`` on a free port of 127.0.0.1).
2. Seeds it through a ZEO 6 client: ``--items`` small objects for the
   readers (200 B to 2 KB of random bytes each, with their SHA-256), one
   object per writer and per closing churner, one blob holder per blob
   user, a ``BTrees.Length`` counter and a shared mapping.
3. Runs ``--clients`` clients for ``--minutes`` in worker processes
   (``python -m stress.soak --worker SPEC``), ``--clients-per-process``
   client threads in each, every client its own ``ClientStorage``,
   alternately ZEO 6's and ours (``zodbserver.client.ClientStorage``).  Of
   every 16 clients:

   * 6 readers: transactions of ``LOADS_PER_READ`` random loads through a
     ZODB connection whose cache is minimized first (64 objects; the
     storage's cache 256 KB, so most loads go to the server); each item is
     checked against its digest, a writer's value must never go back;
   * 4 writers: commits of their own object, ``counter.change(1)`` on the
     shared ``Length`` (concurrent increments conflict, the server
     resolves them), and writes of the shared mapping, which conflict for
     real: a ``ConflictError`` there is retried as an application would,
     and counted, not an error;
   * 2 blob users: commits of a new revision (100 KB to 2 MB) of their
     blob, reads of the others' blobs, checked against the digest
     committed with them;
   * 2 churners that connect, load, commit every other time, and close
     properly, again and again;
   * 2 churners that vanish: a single-threaded worker forks a child per
     visit, which connects, loads one or two objects and, every other
     time, stores an object and votes (holding the commit lock); then the
     worker SIGKILLs it.  The kernel closes its socket; no goodbye.

   Every operation's latency is recorded by kind; every exception is an
   error, recorded with the operation's kind (but for the retried
   conflicts above).
4. Samples the server every ``--interval`` seconds: ``VmRSS``, ``VmHWM``
   and ``Threads`` of ``/proc/PID/status``, the entries of
   ``/proc/PID/fd`` (and how many are sockets) -- the ground truth -- and
   the monitor's ``/metrics`` (its own RSS and fd count, the clients
   connected, commits, loads, conflicts) -- the operator's view; once
   idle before the clients start and once idle after they have gone.
5. Stops the server (SIGTERM, exit status 0) and checks the file: every
   writer's and closing churner's object holds its last acknowledged value,
   and every value before it is in the history; the counter equals the
   acknowledged increments; the shared mapping holds the write acknowledged
   last; every blob revision acknowledged has its content; no voted
   transaction of a killed child is in the file; the transactions in the
   file are the seeding's plus every acknowledged commit, exactly, as the
   monitor counted them; ``fstest`` passes; no transaction holds two
   records of one object but for blobs (known finding S1, below);
   FileStorage uses the index the server saved at shutdown, unless S1
   explains why not.  Once the clients have gone, ``/status.json`` shows no
   client, no transaction and the commit lock free.

Known findings (``KNOWN_FINDINGS``) are counted and reported apart and do
not fail a run.  S1: every blob revision is stored twice in its transaction
(the client's ``storea`` and its ``storeBlobEnd`` both reach the storage, as
with ZEO 6), so a shutdown right after a blob write leaves an index that
FileStorage ignores at the next open.

"Flat after warm-up": warm-up is the first ``WARMUP`` (20%) of the run.
After it, resident memory (``VmRSS``) may grow, from the first sample after
warm-up to the last and along the least-squares line, by at most
``max(RSS_GROWTH_FRACTION * first, RSS_GROWTH_FLOOR)`` (10% or 32 MiB); and
at every sample after warm-up the open fds differ from the first such
sample's by at most the number of clients connected at that instant.  Once
the clients have gone, the fds are back to their idle level before they
came (``IDLE_FD_SLACK``), but for FileStorage's pool of read handles on
Data.fs, which keeps one per thread that read concurrently (at most the
server's thread count).

The report (stdout, and ``--output`` as Markdown) gives the checks, the
per-operation counts and p50/p90/p99/max latencies, the errors, the memory
and fd figures with their slopes, per-minute samples, the plot (``--plot``,
a PNG: an SVG of the curves, screenshotted by headless Chromium through
``tests/support/browser.py``; ``--no-plot`` draws none), and the machine
with its load (other jobs may share it; latencies on a loaded 2-core
machine are the machine's as much as the server's).  The exit status is 1
if any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import html
import io
import json
import logging
import math
import os
import pickle
import platform
import random
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import transaction
import ZEO.ClientStorage
import ZODB
from BTrees.Length import Length
from persistent.list import PersistentList
from persistent.mapping import PersistentMapping
from ZODB.blob import Blob
from ZODB.Connection import TransactionMetaData
from ZODB.POSException import ConflictError
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle
from ZODB.utils import z64

import zodbserver.client

ROOT = Path(__file__).resolve().parent.parent
# The server process, the monitor reader and the browser are the test
# suite's machinery, in tests/support, as pytest finds it (pythonpath =
# ["tests"]).
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench.report import machine  # noqa: E402

from support.browser import Browser  # noqa: E402
from support.monitoring import Scrape, get  # noqa: E402
from support.server_processes import ServerProcess, free_port  # noqa: E402

DEFAULT_OUTPUT = ROOT / "stress" / "results" / "soak.md"
DEFAULT_PLOT = ROOT / "stress" / "results" / "soak.png"

ROLES = ("reader", "writer", "blob", "churn-close", "churn-drop")
#: Clients of each role in every 16.
WEIGHTS = {"reader": 6, "writer": 4, "blob": 2, "churn-close": 2, "churn-drop": 2}
ROLE_TEXT = {
    "reader": "readers",
    "writer": "writers",
    "blob": "blob users",
    "churn-close": "churners that close",
    "churn-drop": "churners that vanish (SIGKILLed)",
}
KINDS = ("ours", "zeo")
KIND_TEXT = {"ours": "zodbserver.client", "zeo": "ZEO 6"}

#: Operation kinds, in the report's order, with what each times.
OPERATIONS = {
    "load": "one object loaded into a ghost (`conn.get(oid)._p_activate()`)",
    "commit": "`commit()` of the client's own object",
    "increment": "`commit()` of `counter.change(1)`: the shared Length, "
    "resolved on the server",
    "shared write": "`commit()` of the shared mapping (the attempt that "
    "succeeded; conflicts retried)",
    "blob write": "`commit()` of a new blob revision, 100 KB to 2 MB (upload)",
    "blob read": "`open('r')` and `read()` of another user's blob (download)",
    "connect": "`ClientStorage(...)` and `ZODB.DB(...)` until usable",
    "close": "`DB.close()`",
    "vote, then killed": "`tpc_vote` of a transaction whose process is "
    "SIGKILLed before `tpc_finish`",
}

#: Loads per reader transaction.
LOADS_PER_READ = 4
#: The share of a reader's loads that go to writers' objects.
WRITER_READ_SHARE = 0.2
#: Object cache of the readers' and churners' ZODB connections (objects),
#: and bytes of their storages' caches.
SMALL_OBJECT_CACHE = 64
SMALL_STORAGE_CACHE = 256 * 1024
#: The storage cache of writers and blob users, and the blob caches.
STORAGE_CACHE = 4 * 1024 * 1024
BLOB_CACHE = 16 * 1024 * 1024
#: The writers' operations, round and round.
WRITER_CYCLE = (
    "commit",
    "increment",
    "commit",
    "shared write",
    "commit",
    "increment",
)
#: The blob users' operations, round and round.
BLOB_CYCLE = ("blob write", "blob read", "blob read", "blob read")
BLOB_SIZES = (100 * 1000, 2 * 1000 * 1000)
ITEM_SIZES = (200, 2000)
#: Think times between operations, seconds (uniform).
PAUSES = {
    "reader": (0.05, 0.25),
    "writer": (0.2, 0.6),
    "blob": (0.4, 1.2),
    "churn-close": (0.5, 2.0),
    "churn-drop": (0.5, 2.0),
}
#: Attempts at a shared write before it counts as an error, and the most a
#: writer sleeps before the next (uniform from 0, growing with each attempt
#: up to ten times this), as an application backs off.
SHARED_ATTEMPTS = 50
SHARED_BACKOFF = 0.02
#: How long a client waits for the server (``wait_timeout``).
WAIT_TIMEOUT = 60.0
#: How long a forked child may take to connect, do its operations and say
#: so before it counts as stuck.
CHILD_TIMEOUT = 60.0
#: Seconds for a worker to start and connect its clients, and to finish
#: once the run is over.
WORKER_START = 180.0
WORKER_FINISH = 180.0
#: The first fraction of the run that is warm-up.
WARMUP = 0.2
#: The bound on RSS growth after warm-up: the larger of this fraction of
#: the first sample after warm-up and this many bytes.
RSS_GROWTH_FRACTION = 0.10
RSS_GROWTH_FLOOR = 32 * 2**20
#: Open fds idle after the clients left may exceed those idle before by this
#: many (none expected), besides FileStorage's read handles on Data.fs: its
#: pool keeps one for every thread that has read at the same time as
#: others, for reuse, so they may grow up to the server's thread count.
IDLE_FD_SLACK = 2
READ_POOL = "Data.fs"
#: Seconds to wait for the server to see every client gone.
IDLE_TIMEOUT = 60.0
#: Findings already reported: counted and shown apart, they do not fail a
#: run (a new finding does).
KNOWN_FINDINGS = {
    "S1": "every blob revision is stored twice in its transaction: the "
    "client's `storea` and its `storeBlobEnd` both reach the storage "
    "(`store`, then `storeBlob`, which stores again), as with ZEO 6's client "
    "and server; Data.fs holds two data records of the blob's oid in that "
    "transaction, and FileStorage ignores the index it saved at a shutdown "
    "when the last transaction was such a one ('Ignoring index'), reading "
    "the whole file to rebuild it at the next open",
}
#: Errors kept verbatim per operation kind (all are counted).
ERRORS_KEPT = 20
MIB = 2**20


# ---------------------------------------------------------------------------
# Options


@dataclass
class Options:
    clients: int = 64
    seconds: float = 600.0
    seed: int = 0
    interval: float = 5.0
    items: int = 4000
    clients_per_process: int = 8
    directory: Path | None = None
    keep: bool = False
    output: Path | None = None
    plot: Path | None = None
    quiet: bool = False
    argv: list[str] = field(default_factory=list)


def parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m stress.soak",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients")
    parser.add_argument("--minutes", type=float, default=10.0, help="of load")
    parser.add_argument("--seed", type=int, help="the clients' choices (random)")
    parser.add_argument(
        "--interval", type=float, default=5.0, help="seconds between samples"
    )
    parser.add_argument("--items", type=int, default=4000, help="objects to read")
    parser.add_argument(
        "--clients-per-process",
        type=int,
        default=8,
        help="client threads in each worker process",
    )
    parser.add_argument(
        "--directory", type=Path, help="where the data go (the system's temp)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data")
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"the Markdown report (default {DEFAULT_OUTPUT.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        help="the PNG of RSS and fds (default: the output's name with .png)",
    )
    parser.add_argument(
        "--no-plot", action="store_true", help="draw no PNG (no Chromium needed)"
    )
    parser.add_argument("--no-output", action="store_true", help="stdout only")
    args = parser.parse_args(argv)
    if args.clients < len(ROLES):
        parser.error(f"--clients must be at least {len(ROLES)} (one of each role)")
    output = None if args.no_output else args.output
    plot = args.plot
    if plot is None and output is not None:
        plot = output.with_suffix(".png")
    if args.no_plot:
        plot = None
    return Options(
        clients=args.clients,
        seconds=args.minutes * 60,
        seed=args.seed if args.seed is not None else random.randrange(1 << 30),
        interval=args.interval,
        items=args.items,
        clients_per_process=args.clients_per_process,
        directory=args.directory,
        keep=args.keep,
        output=output,
        plot=plot,
        argv=list(sys.argv[1:] if argv is None else argv),
    )


def role_counts(clients: int) -> dict[str, int]:
    """``clients`` shared among the roles by ``WEIGHTS`` (largest
    remainders), at least one of each."""
    total = sum(WEIGHTS.values())
    exact = {role: clients * WEIGHTS[role] / total for role in ROLES}
    counts = {role: max(1, int(exact[role])) for role in ROLES}
    while sum(counts.values()) < clients:
        role = max(ROLES, key=lambda r: exact[r] - counts[r])
        counts[role] += 1
    while sum(counts.values()) > clients:
        role = max(
            (r for r in ROLES if counts[r] > 1), key=lambda r: counts[r] - exact[r]
        )
        counts[role] -= 1
    return counts


# ---------------------------------------------------------------------------
# Clients: what runs in the worker processes


def open_storage(
    kind: str, address: tuple[str, int], *, cache_size: int, blob_dir: str | None
) -> Any:
    """A connected ``ClientStorage``, ZEO 6's (``zeo``) or ours."""
    options: dict[str, Any] = {"cache_size": cache_size, "wait_timeout": WAIT_TIMEOUT}
    if blob_dir is not None:
        options.update(
            blob_dir=blob_dir, shared_blob_dir=False, blob_cache_size=BLOB_CACHE
        )
    if kind == "zeo":
        return ZEO.ClientStorage.ClientStorage(address, **options)
    return zodbserver.client.ClientStorage(address, **options)


def open_db(
    kind: str,
    address: tuple[str, int],
    *,
    cache_size: int,
    object_cache: int,
    blob_dir: str | None = None,
) -> Any:
    storage = open_storage(kind, address, cache_size=cache_size, blob_dir=blob_dir)
    try:
        return ZODB.DB(storage, cache_size=object_cache, pool_size=1)
    except BaseException:
        storage.close()
        raise


class DataError(Exception):
    """What a client read is not what was written."""


def item_payload(seed: int, index: int) -> bytes:
    rng = random.Random(f"item:{seed}:{index}")
    return rng.randbytes(rng.randint(*ITEM_SIZES))


def blob_content(name: str, seq: int, size: int) -> bytes:
    return random.Random(f"blob:{name}:{seq}").randbytes(size)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Recorder:
    """One client's latencies and errors (one thread writes it)."""

    name: str
    began: float
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_counts: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append(seconds)

    def timed(self, kind: str, call: Callable[[], Any]) -> Any:
        began = time.perf_counter()
        result = call()
        self.add(kind, time.perf_counter() - began)
        return result

    def error(self, kind: str, exc: BaseException | str) -> None:
        if isinstance(exc, BaseException):
            text = f"{type(exc).__name__}: {exc}"
            where = traceback.format_exception(exc, limit=-3)
        else:
            text, where = exc, []
        key = f"{kind}: {text.split(':')[0]}"
        self.error_counts[key] += 1
        if self.error_counts[key] <= ERRORS_KEPT:
            self.errors.append(
                {
                    "kind": kind,
                    "client": self.name,
                    "error": text[:500],
                    "at": round(time.time() - self.began, 2),
                    "traceback": "".join(where)[-1500:],
                }
            )


@dataclass
class Context:
    """What every client of a worker knows."""

    address: tuple[str, int]
    seed: int
    items: list[bytes]
    writers: list[bytes]
    holders: dict[str, bytes]
    counter: bytes
    shared: bytes
    directory: Path
    began: float = 0.0
    end: float = 0.0

    def running(self) -> bool:
        return time.time() < self.end


def load_item(conn: Any, context: Context, rng: random.Random, rec: Recorder) -> None:
    """Load one random item and check it."""
    index = rng.randrange(len(context.items))
    began = time.perf_counter()
    obj = conn.get(context.items[index])
    obj._p_activate()
    rec.add("load", time.perf_counter() - began)
    if obj["i"] != index or digest(obj["payload"]) != obj["digest"]:
        raise DataError(f"item {index} is not what was written")


def load_writer(
    conn: Any,
    context: Context,
    rng: random.Random,
    rec: Recorder,
    seen: dict[bytes, int],
) -> None:
    """Load one writer's object; its value never goes back."""
    oid = rng.choice(context.writers)
    began = time.perf_counter()
    obj = conn.get(oid)
    obj._p_activate()
    rec.add("load", time.perf_counter() - began)
    value = obj["value"]
    if value < seen.get(oid, 0):
        raise DataError(f"writer object {oid.hex()} went back from {seen[oid]}")
    seen[oid] = value


class Client:
    """One client thread of a worker process."""

    def __init__(self, spec: dict[str, Any], context: Context) -> None:
        self.name: str = spec["name"]
        self.role: str = spec["role"]
        self.kind: str = spec["kind"]
        self.oid = bytes.fromhex(spec["oid"]) if spec.get("oid") else b""
        self.context = context
        self.rng = random.Random(f"{context.seed}:{self.name}")
        self.rec = Recorder(self.name, context.began)
        self.db: Any = None
        self.state: dict[str, Any] = {"role": self.role, "kind": self.kind}
        self.thread: threading.Thread | None = None

    @property
    def blob_dir(self) -> str:
        path = self.context.directory / "clients" / self.name
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def connect(self) -> None:
        """Open the client's database (churners connect as they run)."""
        if self.role == "churn-close":
            return
        small = self.role == "reader"
        self.db = open_db(
            self.kind,
            self.context.address,
            cache_size=SMALL_STORAGE_CACHE if small else STORAGE_CACHE,
            object_cache=SMALL_OBJECT_CACHE if small else 1000,
            blob_dir=self.blob_dir if self.role == "blob" else None,
        )

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.rec.began = self.context.began
        try:
            getattr(self, "run_" + self.role.replace("-", "_"))()
        except Exception as exc:  # outside any operation: the client broke
            self.rec.error("client", exc)
        finally:
            if self.db is not None:
                try:
                    self.db.close()
                except Exception as exc:
                    self.rec.error("close", exc)
                self.db = None

    def pause(self) -> None:
        seconds = self.rng.uniform(*PAUSES[self.role])
        time.sleep(max(0.0, min(seconds, self.context.end - time.time())))

    def run_reader(self) -> None:
        context, rng, rec = self.context, self.rng, self.rec
        manager = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=manager)
        seen: dict[bytes, int] = {}
        transactions = 0
        try:
            while context.running():
                manager.begin()
                conn.cacheMinimize()
                try:
                    for _ in range(LOADS_PER_READ):
                        if rng.random() < WRITER_READ_SHARE:
                            load_writer(conn, context, rng, rec, seen)
                        else:
                            load_item(conn, context, rng, rec)
                except Exception as exc:
                    rec.error("load", exc)
                finally:
                    manager.abort()
                transactions += 1
                self.pause()
        finally:
            manager.abort()
            conn.close()
            self.state["transactions"] = transactions

    def run_writer(self) -> None:
        context, rec = self.context, self.rec
        manager = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=manager)
        state = self.state
        state.update(acked=0, last=0, last_tid="", increments=0, shared=[], retries=0)
        step = 0
        try:
            while context.running():
                kind = WRITER_CYCLE[step % len(WRITER_CYCLE)]
                step += 1
                try:
                    if kind == "commit":
                        manager.begin()
                        obj = conn.get(self.oid)
                        value = obj["value"] + 1
                        obj["value"] = value
                        rec.timed(kind, manager.commit)
                        state["acked"] += 1
                        state["last"] = value
                        state["last_tid"] = obj._p_serial.hex()
                    elif kind == "increment":
                        manager.begin()
                        conn.get(context.counter).change(1)
                        rec.timed(kind, manager.commit)
                        state["increments"] += 1
                    else:
                        self._shared_write(conn, manager)
                except Exception as exc:
                    manager.abort()
                    rec.error(kind, exc)
                self.pause()
        finally:
            manager.abort()
            conn.close()

    def _shared_write(self, conn: Any, manager: Any) -> None:
        state = self.state
        number = len(state["shared"]) + 1
        for attempt in range(SHARED_ATTEMPTS):
            if attempt:
                time.sleep(self.rng.uniform(0, SHARED_BACKOFF * min(attempt, 10)))
            manager.begin()
            shared = conn.get(self.context.shared)
            shared["writer"] = self.name
            shared["n"] = number
            began = time.perf_counter()
            try:
                manager.commit()
            except ConflictError:
                manager.abort()
                state["retries"] += 1
                continue
            self.rec.add("shared write", time.perf_counter() - began)
            state["shared"].append([shared._p_serial.hex(), number])
            return
        raise ConflictError(f"still conflicting after {SHARED_ATTEMPTS} attempts")

    def run_blob(self) -> None:
        context, rng, rec = self.context, self.rng, self.rec
        manager = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=manager)
        others = [oid for name, oid in context.holders.items() if name != self.name]
        others = others or [self.oid]
        state = self.state
        state.update(blobs=[], last_seq=0, reads=0, read_bytes=0)
        step = 0
        try:
            while context.running():
                kind = BLOB_CYCLE[step % len(BLOB_CYCLE)]
                step += 1
                try:
                    if kind == "blob write":
                        self._blob_write(conn, manager)
                    else:
                        manager.begin()
                        holder = conn.get(rng.choice(others))
                        expected, size = holder["digest"], holder["size"]
                        blob = holder["blob"]
                        began = time.perf_counter()
                        with blob.open("r") as file:
                            data = file.read()
                        rec.add(kind, time.perf_counter() - began)
                        manager.abort()
                        if len(data) != size or digest(data) != expected:
                            raise DataError(
                                f"blob {blob._p_oid.hex()} is not what was written"
                            )
                        state["reads"] += 1
                        state["read_bytes"] += size
                except Exception as exc:
                    manager.abort()
                    rec.error(kind, exc)
                self.pause()
        finally:
            manager.abort()
            conn.close()

    def _blob_write(self, conn: Any, manager: Any) -> None:
        state = self.state
        seq = state["last_seq"] + 1
        size = self.rng.randint(*BLOB_SIZES)
        data = blob_content(self.name, seq, size)
        manager.begin()
        holder = conn.get(self.oid)
        with holder["blob"].open("w") as file:
            file.write(data)
        holder["seq"] = seq
        holder["size"] = size
        holder["digest"] = digest(data)
        self.rec.timed("blob write", manager.commit)
        # The commit made the blob a ghost, its _p_serial still the old
        # revision's; the holder's is the transaction's.
        blob = holder["blob"]
        state["last_seq"] = seq
        state["blobs"].append(
            [blob._p_oid.hex(), holder._p_serial.hex(), size, holder["digest"], seq]
        )

    def run_churn_close(self) -> None:
        context, rng, rec = self.context, self.rng, self.rec
        state = self.state
        state.update(acked=0, last=0, visits=0, kinds=Counter())
        visit = 0
        while context.running():
            visit += 1
            kind = KINDS[(visit + ROLES.index(self.role)) % 2]
            state["kinds"][kind] += 1
            db = None
            operation = "connect"
            try:
                began = time.perf_counter()
                db = open_db(
                    kind,
                    context.address,
                    cache_size=SMALL_STORAGE_CACHE,
                    object_cache=SMALL_OBJECT_CACHE,
                )
                rec.add("connect", time.perf_counter() - began)
                manager = transaction.TransactionManager()
                conn = db.open(transaction_manager=manager)
                try:
                    operation = "load"
                    manager.begin()
                    load_item(conn, context, rng, rec)
                    if visit % 2 == 0:
                        operation = "commit"
                        obj = conn.get(self.oid)
                        value = obj["value"] + 1
                        obj["value"] = value
                        rec.timed("commit", manager.commit)
                        state["acked"] += 1
                        state["last"] = value
                finally:
                    manager.abort()
                    conn.close()
            except Exception as exc:
                rec.error(operation, exc)
            finally:
                if db is not None:
                    try:
                        rec.timed("close", db.close)
                    except Exception as exc:
                        rec.error("close", exc)
            state["visits"] = visit
            self.pause()


def load_context(spec: dict[str, Any]) -> Context:
    layout = spec["layout"]
    return Context(
        address=(spec["address"][0], spec["address"][1]),
        seed=spec["seed"],
        items=[bytes.fromhex(oid) for oid in layout["items"]],
        writers=[bytes.fromhex(oid) for oid in layout["writers"].values()],
        holders={name: bytes.fromhex(oid) for name, oid in layout["holders"].items()},
        counter=bytes.fromhex(layout["counter"]),
        shared=bytes.fromhex(layout["shared"]),
        directory=Path(spec["directory"]),
    )


class CountingHandler(logging.Handler):
    """Counts the clients' log records of WARNING and above, by level and
    logger, and keeps the first few."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.levelname} {record.name}"] += 1
        if len(self.first) < 10:
            self.first.append(
                f"{record.levelname} {record.name}: {record.getMessage()}"
            )


def worker_main(spec_path: str) -> int:
    """A worker process: its clients, from connecting to the result file."""
    spec = json.loads(Path(spec_path).read_text())
    logging.basicConfig(
        filename=spec["log"],
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    counting = CountingHandler()
    logging.getLogger().addHandler(counting)
    context = load_context(spec)
    if spec["dropper"]:
        result = Dropper(spec, context).run()
    else:
        result = run_threads(spec, context)
    result["log"] = {"counts": dict(counting.counts), "first": counting.first}
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


def _await_go(context: Context) -> None:
    print("ready", flush=True)
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("the soak's parent went away before the start")
    go = json.loads(line)
    context.began, context.end = go["began"], go["end"]
    time.sleep(max(0.0, context.began - time.time()))


def run_threads(spec: dict[str, Any], context: Context) -> dict[str, Any]:
    clients = [Client(client, context) for client in spec["clients"]]
    failed: list[dict[str, Any]] = []
    for client in clients:
        try:
            client.connect()
        except Exception as exc:
            client.rec.error("connect", exc)
            failed.append({"client": client.name, "error": repr(exc)})
    _await_go(context)
    for client in clients:
        if client.db is not None or client.role == "churn-close":
            client.start()
    stuck = []
    deadline = context.end + WORKER_FINISH
    for client in clients:
        if client.thread is not None:
            client.thread.join(max(1.0, deadline - time.time()))
            if client.thread.is_alive():
                stuck.append(client.name)
                client.rec.error("client", "StuckClient: did not finish")
    return {
        "clients": {c.name: c.state for c in clients},
        "recorders": [_recorded(c.rec) for c in clients],
        "stuck": stuck,
        "connect_failures": failed,
    }


def _recorded(rec: Recorder) -> dict[str, Any]:
    return {
        "latencies": rec.latencies,
        "errors": rec.errors,
        "error_counts": dict(rec.error_counts),
    }


class Dropper:
    """The churners that vanish: a single-threaded process that forks a
    child per visit (cheap: ZODB and both clients are imported already,
    and no thread is running), and SIGKILLs it once it has connected, loaded
    and -- every other time -- voted a transaction, holding the commit
    lock."""

    def __init__(self, spec: dict[str, Any], context: Context) -> None:
        self.context = context
        self.slots: list[dict[str, Any]] = [
            {"spec": client, "visits": 0, "next": 0.0, "child": None}
            for client in spec["clients"]
        ]
        self.rec = Recorder("dropper", 0.0)
        self.rng = random.Random(f"{context.seed}:dropper")
        self.drops: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.doomed: list[str] = []

    def run(self) -> dict[str, Any]:
        context = self.context
        _await_go(context)
        self.rec.began = context.began
        for slot in self.slots:
            slot["next"] = context.began + self.rng.uniform(0, 1)
        try:
            while context.running():
                now = time.time()
                for slot in self.slots:
                    if slot["child"] is None and slot["next"] <= now:
                        self._fork(slot)
                    elif slot["child"] is not None:
                        child = slot["child"]
                        if now - child["started"] > CHILD_TIMEOUT:
                            self.rec.error(child["operation"], "StuckChild: no word")
                            self._kill(slot)
                self._read(now)
        finally:
            for slot in self.slots:
                if slot["child"] is not None:
                    self._kill(slot)
        return {
            "clients": {
                s["spec"]["name"]: {"role": "churn-drop", "visits": s["visits"]}
                for s in self.slots
            },
            "recorders": [_recorded(self.rec)],
            "drops": dict(self.drops),
            "kinds": dict(self.kinds),
            "doomed": self.doomed,
            "stuck": [],
            "connect_failures": [],
        }

    def _read(self, now: float) -> None:
        children = {s["child"]["fd"]: s for s in self.slots if s["child"] is not None}
        waits = [s["next"] - now for s in self.slots if s["child"] is None]
        timeout = max(0.0, min([0.2, self.context.end - now, *waits]))
        if not children:
            time.sleep(timeout)
            return
        readable, _, _ = select.select(list(children), [], [], timeout)
        for fd in readable:
            slot = children[fd]
            child = slot["child"]
            data = os.read(fd, 65536)
            if not data:
                self.rec.error(child["operation"], "ChildDied: exited unasked")
                self._kill(slot)
                continue
            child["buffer"] += data
            *lines, child["buffer"] = child["buffer"].split(b"\n")
            for line in lines:
                message = json.loads(line)
                if "op" in message:
                    self.rec.add(message["op"], message["seconds"])
                    child["operation"] = message.get("next", child["operation"])
                elif "error" in message:
                    self.rec.error(message["kind"], message["error"])
                elif "doomed" in message:
                    self.doomed.append(message["doomed"])
                elif "ready" in message:
                    self.drops[message["ready"]] += 1
                    self._kill(slot)
                    break

    def _fork(self, slot: dict[str, Any]) -> None:
        slot["visits"] += 1
        visit = slot["visits"]
        index = self.slots.index(slot)
        kind = KINDS[(visit + index) % 2]
        vote = visit % 2 == 0
        self.kinds[kind] += 1
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            status = 0
            try:
                os.close(read_fd)
                for other in self.slots:
                    if other["child"] is not None:
                        os.close(other["child"]["fd"])
                seed = f"{self.context.seed}:{slot['spec']['name']}:{visit}"
                vanishing_child(self.context, kind, vote, seed, write_fd)
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        os.close(write_fd)
        slot["child"] = {
            "pid": pid,
            "fd": read_fd,
            "buffer": b"",
            "started": time.time(),
            "operation": "connect",
        }

    def _kill(self, slot: dict[str, Any]) -> None:
        child = slot["child"]
        with contextlib.suppress(ProcessLookupError):
            os.kill(child["pid"], signal.SIGKILL)
        os.waitpid(child["pid"], 0)
        os.close(child["fd"])
        slot["child"] = None
        low, high = PAUSES["churn-drop"]
        slot["next"] = time.time() + self.rng.uniform(low, high)


def vanishing_child(
    context: Context, kind: str, vote: bool, seed: str, out: int
) -> None:
    """A forked churner: connect, load one or two items, vote if ``vote``,
    say so on ``out``, and wait to be killed."""

    def send(**message: Any) -> None:
        os.write(out, json.dumps(message).encode() + b"\n")

    rng = random.Random(seed)
    operation = "connect"
    try:
        began = time.perf_counter()
        storage = open_storage(
            kind, context.address, cache_size=SMALL_STORAGE_CACHE, blob_dir=None
        )
        db = ZODB.DB(storage, cache_size=SMALL_OBJECT_CACHE, pool_size=1)
        send(op="connect", seconds=time.perf_counter() - began, next="load")
        operation = "load"
        conn = db.open(transaction_manager=transaction.TransactionManager())
        for _ in range(rng.randint(1, 2)):
            index = rng.randrange(len(context.items))
            began = time.perf_counter()
            obj = conn.get(context.items[index])
            obj._p_activate()
            send(op="load", seconds=time.perf_counter() - began)
            if obj["i"] != index or digest(obj["payload"]) != obj["digest"]:
                raise DataError(f"item {index} is not what was written")
        if vote:
            operation = "vote, then killed"
            metadata = TransactionMetaData()
            storage.tpc_begin(metadata)
            oid = storage.new_oid()
            send(doomed=oid.hex())
            storage.store(oid, z64, zodb_pickle(MinPO(f"doomed {seed}")), "", metadata)
            began = time.perf_counter()
            storage.tpc_vote(metadata)
            send(op=operation, seconds=time.perf_counter() - began)
    except Exception as exc:
        send(kind=operation, error=f"{type(exc).__name__}: {exc}"[:500])
    send(ready="voted" if vote else "idle")
    time.sleep(CHILD_TIMEOUT * 2)


# ---------------------------------------------------------------------------
# The parent: server, workers, sampling


@dataclass
class Sample:
    """The server at one instant."""

    #: Seconds since the clients started (negative: before).
    at: float
    phase: str
    rss: int
    hwm: int
    fds: int
    sockets: int
    threads: int
    #: The monitor's view (None: the scrape failed).
    metrics: dict[str, float] | None
    load_average: float
    #: The open fds by what they are (``fd_kind``).
    fd_kinds: Counter[str] = field(default_factory=Counter)
    #: The monitor's histograms (idle samples only): key -> {"buckets":
    #: [(upper bound, cumulative count)], "sum", "count"}.
    histograms: dict[str, Any] | None = None
    #: What ``/status.json`` says of storage 1 (idle samples only).
    status: dict[str, Any] | None = None

    @property
    def connections(self) -> float | None:
        return None if self.metrics is None else self.metrics["connections"]


#: The /metrics samples kept: our name -> (metric, labelled by storage).
METRICS = {
    "rss": ("process_resident_memory_bytes", False),
    "fds": ("process_open_fds", False),
    "cpu": ("process_cpu_seconds_total", False),
    "connections": ("zodbserver_connections", True),
    "commits": ("zodbserver_commits_total", True),
    "loads": ("zodbserver_loads_total", True),
    "aborts": ("zodbserver_aborts_total", True),
    "conflicts": ("zodbserver_conflicts_total", True),
    "resolved": ("zodbserver_conflicts_resolved_total", True),
    "active": ("zodbserver_active_transactions", True),
    "blob_up": ("zodbserver_blob_uploaded_bytes_total", False),
    "blob_down": ("zodbserver_blob_downloaded_bytes_total", False),
}


#: The monitor's histograms of commits: our name -> metric.
HISTOGRAMS = {
    "lock wait": "zodbserver_commit_lock_wait_seconds",
    "lock hold": "zodbserver_commit_lock_hold_seconds",
    "vote": "zodbserver_vote_seconds",
    "finish": "zodbserver_finish_seconds",
}


def scrape(
    address: tuple[str, int], histograms: dict[str, Any] | None = None
) -> dict[str, float]:
    """The ``METRICS`` of a scrape; the ``HISTOGRAMS`` into ``histograms``
    if given."""
    found = Scrape(address)
    values = {}
    for key, (name, per_storage) in METRICS.items():
        labels = {"storage": "1"} if per_storage else {}
        values[key] = found.value(name, default=0.0, **labels)
    values["protocol_errors"] = sum(
        found.samples.get("zodbserver_protocol_errors_total", {}).values()
    )
    if histograms is not None:
        for key, name in HISTOGRAMS.items():
            buckets = sorted(
                (float(dict(labels)["le"]), count)
                for labels, count in found.samples.get(name + "_bucket", {}).items()
                if dict(labels).get("storage") == "1"
            )
            histograms[key] = {
                "buckets": buckets,
                "sum": found.value(name + "_sum", storage="1"),
                "count": found.value(name + "_count", storage="1"),
            }
    return values


def server_status(monitor: tuple[str, int]) -> dict[str, Any]:
    """Storage 1 as ``/status.json`` shows it: the state, the clients, the
    transactions and the commit lock."""
    response = get(monitor, "/status.json")
    if response.status != 200:
        raise RuntimeError(f"/status.json answered {response.status}")
    page = json.loads(response.body)
    storage = next(s for s in page["storages"] if s["name"] == "1")
    return {
        "state": page["state"],
        "clients": len(storage["clients"]),
        "connections": storage["connections"],
        "active_transactions": storage["active_transactions"],
        "waiting": storage["waiting"],
        "lock_holder": storage["lock"]["holder"],
        "lock_queue": len(storage["lock"]["queue"]),
        "invalidation_queue": storage["invalidation_queue"],
    }


def fd_kind(target: str, server_dir: str) -> str:
    """What an fd's link names, grouped: sockets, pipes, anonymous inodes,
    blob files, and other files by their path under the server's
    directory."""
    if target.startswith(("socket:", "pipe:")):
        return target.split(":")[0]
    if target.startswith("anon_inode:"):
        return target
    if "/blobs/" in target:
        return "blob file"
    if target.startswith(server_dir):
        return target[len(server_dir) :].lstrip("/")
    return target


def take_sample(
    pid: int,
    monitor: tuple[str, int],
    at: float,
    phase: str,
    errors: list[str],
    server_dir: str = "",
) -> Sample:
    """``/proc`` first, then the monitor (whose HTTP connection is then one
    more fd of the server's); the histograms too in an idle sample."""
    status = {}
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            key, _, value = line.partition(":")
            status[key] = value.split()
    entries = os.listdir(f"/proc/{pid}/fd")
    kinds: Counter[str] = Counter()
    for entry in entries:
        try:
            kinds[fd_kind(os.readlink(f"/proc/{pid}/fd/{entry}"), server_dir)] += 1
        except OSError:
            kinds["(closed while listed)"] += 1
    metrics = None
    histograms: dict[str, Any] | None = {} if phase != "load" else None
    status_page: dict[str, Any] | None = None
    try:
        metrics = scrape(monitor, histograms)
        if phase != "load":
            status_page = server_status(monitor)
    except Exception as exc:
        errors.append(f"{phase} sample at {at:.0f}s: {type(exc).__name__}: {exc}")
    return Sample(
        at=at,
        phase=phase,
        rss=int(status["VmRSS"][0]) * 1024,
        hwm=int(status["VmHWM"][0]) * 1024,
        fds=len(entries),
        sockets=kinds["socket"],
        threads=int(status["Threads"][0]),
        metrics=metrics,
        load_average=os.getloadavg()[0],
        fd_kinds=kinds,
        histograms=histograms,
        status=status_page,
    )


#: The last sample is at least this long before the clients stop.
SETTLE = 0.5


class Sampler:
    """Samples the server every ``interval`` seconds from ``began`` until
    just before ``end`` (epoch times), on the dot."""

    def __init__(
        self,
        pid: int,
        monitor: tuple[str, int],
        began: float,
        end: float,
        interval: float,
        server_dir: str,
    ) -> None:
        self.pid, self.monitor, self.server_dir = pid, monitor, server_dir
        self.began, self.end, self.interval = began, end, interval
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        tick = 0
        while True:
            due = self.began + tick * self.interval
            # Not at the end itself: the clients are leaving then.
            if due > self.end - SETTLE:
                return
            if self._stop.wait(max(0.0, due - time.time())):
                return
            try:
                sample = take_sample(
                    self.pid,
                    self.monitor,
                    time.time() - self.began,
                    "load",
                    self.errors,
                    self.server_dir,
                )
                self.samples.append(sample)
            except Exception as exc:
                self.errors.append(f"sample {tick}: {type(exc).__name__}: {exc}")
            tick += 1


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Outcome:
    """Everything the report shows."""

    options: Options
    directory: Path
    counts: dict[str, int] = field(default_factory=dict)
    processes: int = 0
    started: str = ""
    uptime_before: str = ""
    uptime_after: str = ""
    load_at_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_at_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    machine: dict[str, Any] = field(default_factory=dict)
    duration: float = 0.0
    #: CPU seconds (user + system) of the worker processes and their
    #: children.
    client_cpu: float = 0.0
    total: float = 0.0
    setup_transactions: int = 0
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_counts: Counter[str] = field(default_factory=Counter)
    #: Problems of the machinery: workers that failed, samples missing.
    failures: list[str] = field(default_factory=list)
    clients: dict[str, dict[str, Any]] = field(default_factory=dict)
    drops: Counter[str] = field(default_factory=Counter)
    drop_kinds: Counter[str] = field(default_factory=Counter)
    doomed: list[str] = field(default_factory=list)
    client_logs: Counter[str] = field(default_factory=Counter)
    client_log_first: list[str] = field(default_factory=list)
    worker_stderr: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    idle_before: Sample | None = None
    idle_after: Sample | None = None
    sampling_errors: list[str] = field(default_factory=list)
    server_exit: int | None = None
    server_log: Counter[str] = field(default_factory=Counter)
    server_log_lines: list[str] = field(default_factory=list)
    verification: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)
    plot: Path | None = None

    @property
    def error_total(self) -> int:
        return sum(self.error_counts.values())

    @property
    def passed(self) -> bool:
        return all(check.ok for check in self.checks)

    def check(self, name: str) -> Check:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)


def log(options: Options, message: str) -> None:
    if not options.quiet:
        print(f"soak: {message}", file=sys.stderr, flush=True)


def uptime() -> str:
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except OSError:
        load = os.getloadavg()
        return "load average: " + ", ".join(f"{value:.2f}" for value in load)


def run(options: Options) -> Outcome:
    """The whole soak; see the module's docstring."""
    if options.directory is not None:
        options.directory.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="soak-", dir=options.directory))
    outcome = Outcome(options, directory, counts=role_counts(options.clients))
    outcome.started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    outcome.machine = machine_details(directory)
    outcome.uptime_before = uptime()
    outcome.load_at_start = os.getloadavg()
    began = time.monotonic()
    server_dir = directory / "server"
    server_dir.mkdir()
    monitor = ("127.0.0.1", free_port())
    server = ServerProcess(
        "ours",
        server_dir,
        blobs=True,
        zeo_lines=(f"monitor-address {monitor[0]}:{monitor[1]}",),
    )
    with server:
        server.start()
        pid = server.pid
        log(options, f"server pid {pid} on {server.address}, monitor {monitor}")
        layout = seed_database(server.address, directory, options)
        outcome.setup_transactions = layout.pop("transactions")
        outcome.idle_before = idle_sample(pid, monitor, -1.0, "idle before", outcome)
        try:
            _load_phase(outcome, server.address, pid, monitor, layout)
        except Exception:
            outcome.failures.append(traceback.format_exc(limit=-4))
            log(options, f"the load phase failed:\n{outcome.failures[-1]}")
        outcome.idle_after = idle_sample(
            pid, monitor, outcome.duration, "idle after", outcome
        )
        outcome.server_exit = server.stop()
    outcome.server_log, outcome.server_log_lines = read_server_log(server.log_path)
    log(options, "verifying the file")
    outcome.verification = verify(server_dir, layout, outcome)
    outcome.memory = flatness(outcome)
    judge(outcome)
    if options.plot is not None:
        try:
            outcome.plot = render_plot(outcome, options.plot, directory / "plot")
        except Exception as exc:
            outcome.checks.append(Check("plot", False, f"{type(exc).__name__}: {exc}"))
    outcome.total = time.monotonic() - began
    outcome.uptime_after = uptime()
    outcome.load_at_end = os.getloadavg()
    return outcome


def idle_sample(
    pid: int, monitor: tuple[str, int], at: float, phase: str, outcome: Outcome
) -> Sample | None:
    """A sample once the server sees no client connected (and the monitor's
    own connections have had a moment to close)."""
    deadline = time.monotonic() + IDLE_TIMEOUT
    while True:
        try:
            if scrape(monitor)["connections"] == 0:
                break
        except Exception as exc:
            outcome.sampling_errors.append(f"{phase}: {type(exc).__name__}: {exc}")
        if time.monotonic() > deadline:
            outcome.failures.append(f"{phase}: clients still connected")
            break
        time.sleep(0.2)
    time.sleep(1.0)
    try:
        server_dir = str(outcome.directory / "server")
        return take_sample(pid, monitor, at, phase, outcome.sampling_errors, server_dir)
    except Exception as exc:
        outcome.sampling_errors.append(f"{phase}: {type(exc).__name__}: {exc}")
        return None


def seed_database(
    address: tuple[str, int], directory: Path, options: Options
) -> dict[str, Any]:
    """The objects the clients use, committed through a ZEO 6 client; their
    oids (hex), by role."""
    counts = role_counts(options.clients)
    names = {
        role: [f"{role}-{number:02d}" for number in range(counts[role])]
        for role in ROLES
    }
    db = ZEO.DB(
        address,
        blob_dir=str(directory / "seed-blobs"),
        shared_blob_dir=False,
        wait_timeout=WAIT_TIMEOUT,
    )
    transactions = 1  # the root's creation
    try:
        with db.transaction() as conn:
            root = conn.root()
            items = root["items"] = PersistentList()
            for index in range(options.items):
                payload = item_payload(options.seed, index)
                items.append(
                    PersistentMapping(
                        {"i": index, "payload": payload, "digest": digest(payload)}
                    )
                )
            root["writers"] = PersistentMapping(
                {
                    name: PersistentMapping({"value": 0, "pad": b"w" * 200})
                    for name in names["writer"] + names["churn-close"]
                }
            )
            holders = root["blobs"] = PersistentMapping()
            for name in names["blob"]:
                data = blob_content(name, 0, BLOB_SIZES[0])
                holders[name] = PersistentMapping(
                    {"seq": 0, "size": len(data), "digest": digest(data)}
                )
                holders[name]["blob"] = blob = Blob()
                with blob.open("w") as file:
                    file.write(data)
            root["counter"] = Length()
            root["shared"] = PersistentMapping({"writer": "", "n": 0})
        transactions += 1
        with db.transaction() as conn:
            root = conn.root()
            writers = root["writers"]
            layout = {
                "items": [item._p_oid.hex() for item in root["items"]],
                "writers": {n: writers[n]._p_oid.hex() for n in names["writer"]},
                "churners": {n: writers[n]._p_oid.hex() for n in names["churn-close"]},
                "holders": {n: root["blobs"][n]._p_oid.hex() for n in names["blob"]},
                "blobs": {
                    n: root["blobs"][n]["blob"]._p_oid.hex() for n in names["blob"]
                },
                "counter": root["counter"]._p_oid.hex(),
                "shared": root["shared"]._p_oid.hex(),
                "names": names,
                "transactions": transactions,
            }
    finally:
        db.close()
    return layout


def client_specs(layout: dict[str, Any]) -> list[dict[str, Any]]:
    own = {**layout["writers"], **layout["churners"], **layout["holders"]}
    specs = []
    for role in ROLES:
        for number, name in enumerate(layout["names"][role]):
            specs.append(
                {
                    "name": name,
                    "role": role,
                    "kind": KINDS[number % 2],
                    "oid": own.get(name, ""),
                }
            )
    return specs


def _load_phase(
    outcome: Outcome,
    address: tuple[str, int],
    pid: int,
    monitor: tuple[str, int],
    layout: dict[str, Any],
) -> None:
    options = outcome.options
    specs = client_specs(layout)
    threaded = [spec for spec in specs if spec["role"] != "churn-drop"]
    dropping = [spec for spec in specs if spec["role"] == "churn-drop"]
    processes = max(1, math.ceil(len(threaded) / options.clients_per_process))
    groups: list[list[dict[str, Any]]] = [[] for _ in range(processes)]
    for number, spec in enumerate(threaded):  # each process gets every role
        groups[number % processes].append(spec)
    work = outcome.directory / "workers"
    work.mkdir()
    workers: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
    base = {
        "address": list(address),
        "seed": options.seed,
        "layout": layout,
        "directory": str(outcome.directory),
    }
    plans = [(group, False) for group in groups] + [(dropping, True)]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = usage.ru_utime + usage.ru_stime
    outcome.processes = len(plans)
    log(
        options,
        f"{options.clients} clients ("
        + ", ".join(f"{n} {r}" for r, n in outcome.counts.items())
        + f") in {len(plans)} processes",
    )
    try:
        for number, (group, dropper) in enumerate(plans):
            spec_path = work / f"worker-{number}.json"
            result = work / f"worker-{number}.result.json"
            stderr_path = work / f"worker-{number}.stderr"
            spec = {
                **base,
                "clients": group,
                "dropper": dropper,
                "result": str(result),
                "log": str(work / f"worker-{number}.log"),
            }
            spec_path.write_text(json.dumps(spec))
            with open(stderr_path, "wb") as stderr:
                process = subprocess.Popen(
                    [sys.executable, "-m", "stress.soak", "--worker", str(spec_path)],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                )
            workers.append((process, result, stderr_path))
        _await_ready(outcome, workers)
        go_at = time.time() + 0.5
        end = go_at + options.seconds
        go = json.dumps({"began": go_at, "end": end}).encode() + b"\n"
        for process, _, _ in workers:
            assert process.stdin is not None
            process.stdin.write(go)
            process.stdin.flush()
        server_dir = str(outcome.directory / "server")
        sampler = Sampler(pid, monitor, go_at, end, options.interval, server_dir)
        sampler.start()
        log(options, f"running for {options.seconds:.0f} s")
        _progress(outcome, sampler, end)
        for process, _, _ in workers:
            try:
                process.wait(max(1.0, end + WORKER_FINISH - time.time()))
            except subprocess.TimeoutExpired:
                outcome.failures.append(f"worker {process.pid} did not finish: killed")
                process.kill()
                process.wait()
        sampler.stop()
        outcome.duration = time.time() - go_at
        # The server is not reaped yet: the children's usage is the workers'.
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        outcome.client_cpu = usage.ru_utime + usage.ru_stime - cpu_before
        outcome.samples = sampler.samples
        outcome.sampling_errors += sampler.errors
    finally:
        for process, _, _ in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
    for process, result, stderr_path in workers:
        if process.returncode != 0:
            outcome.failures.append(
                f"{result.name.split('.')[0]} exited with {process.returncode}"
            )
        text = stderr_path.read_text(errors="replace").strip()
        if text:
            outcome.worker_stderr.append(f"{stderr_path.name}: {text[-2000:]}")
        if result.exists():
            merge(outcome, json.loads(result.read_text()))
        else:
            outcome.failures.append(f"no result from {result.name}")


def _await_ready(
    outcome: Outcome, workers: list[tuple[subprocess.Popen[bytes], Path, Path]]
) -> None:
    deadline = time.monotonic() + WORKER_START
    for process, _, stderr_path in workers:
        assert process.stdout is not None
        left = deadline - time.monotonic()
        readable, _, _ = select.select([process.stdout], [], [], max(0.0, left))
        line = process.stdout.readline() if readable else b""
        if line.strip() != b"ready":
            tail = stderr_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"a worker did not get ready ({line!r}): {tail}")


def _progress(outcome: Outcome, sampler: Sampler, end: float) -> None:
    """Wait for the end, saying how the server does every minute."""
    minute = -1
    while time.time() < end:
        time.sleep(min(1.0, max(0.0, end - time.time())))
        if not sampler.samples or sampler.samples[-1].at // 60 <= minute:
            continue
        last = sampler.samples[-1]
        minute = int(last.at // 60)
        connections = "-" if last.connections is None else f"{last.connections:.0f}"
        log(
            outcome.options,
            f"{last.at:4.0f} s: rss {last.rss / MIB:.1f} MiB, fds {last.fds}, "
            f"connections {connections}, load {last.load_average:.1f}",
        )


def merge(outcome: Outcome, result: dict[str, Any]) -> None:
    for recorded in result["recorders"]:
        for kind, values in recorded["latencies"].items():
            outcome.latencies.setdefault(kind, []).extend(values)
        outcome.errors += recorded["errors"]
        outcome.error_counts.update(recorded["error_counts"])
    outcome.clients.update(result["clients"])
    outcome.drops.update(result.get("drops", {}))
    outcome.drop_kinds.update(result.get("kinds", {}))
    outcome.doomed += result.get("doomed", [])
    outcome.client_logs.update(result["log"]["counts"])
    outcome.client_log_first += result["log"]["first"]
    for name in result["stuck"]:
        outcome.failures.append(f"client {name} did not finish")
    for failure in result["connect_failures"]:
        outcome.failures.append(f"client {failure['client']}: {failure['error']}")


def read_server_log(path: Path) -> tuple[Counter[str], list[str]]:
    """Lines of the server's log by level, and the WARNING+ ones (the first
    few)."""
    levels: Counter[str] = Counter()
    kept: list[str] = []
    with contextlib.suppress(OSError), open(path, errors="replace") as file:
        for line in file:
            parts = line.split(" ", 2)
            level = parts[1] if len(parts) > 2 and parts[1].isupper() else "other"
            levels[level] += 1
            if level not in ("INFO", "DEBUG") and len(kept) < 20:
                kept.append(line.rstrip()[:400])
    return levels, kept


# ---------------------------------------------------------------------------
# Verification


def state_of(data: bytes) -> Any:
    """The state of a record whose state holds no persistent references (a
    writer's mapping, the counter)."""
    unpickler = pickle.Unpickler(io.BytesIO(data))
    unpickler.load()  # the class
    return unpickler.load()


def verify(
    server_dir: Path, layout: dict[str, Any], outcome: Outcome
) -> dict[str, Any]:
    """Check the file against what the clients saw acknowledged."""
    from ZODB.FileStorage import FileStorage
    from ZODB.scripts import fstest

    found: dict[str, Any] = {"problems": []}
    problems: list[str] = found["problems"]
    path = server_dir / "Data.fs"
    try:
        fstest.check(str(path))
        found["fstest"] = "clean"
    except Exception as exc:
        found["fstest"] = f"{type(exc).__name__}: {exc}"
        problems.append(f"fstest: {found['fstest']}")
    owned = {**layout["writers"], **layout["churners"]}
    by_oid = {bytes.fromhex(oid): name for name, oid in owned.items()}
    history: dict[str, set[int]] = {name: set() for name in owned}
    doomed = {bytes.fromhex(oid) for oid in outcome.doomed}
    doomed_found = 0
    index = path.with_name(path.name + ".index")
    found["index_size"] = index.stat().st_size if index.exists() else 0
    storage = FileStorage(str(path), blob_dir=str(server_dir / "blobs"), read_only=True)
    # The index the server saved when it closed the storage passed
    # FileStorage's sanity check (else it logs "Ignoring index" and rebuilds
    # it by reading the whole file).
    found["index_used"] = bool(getattr(storage, "_used_index", 0))
    db = ZODB.DB(storage)
    try:
        tids = []
        blob_oids = {bytes.fromhex(oid) for oid in layout["blobs"].values()}
        # Transactions holding two records of one oid: of a blob (S1), of
        # anything else; and the last transaction's.
        twice: Counter[str] = Counter()
        last_twice: set[bytes] = set()
        for record in storage.iterator():
            tids.append(record.tid)
            seen: set[bytes] = set()
            last_twice = set()
            for item in record:
                if item.oid in seen:
                    last_twice.add(item.oid)
                seen.add(item.oid)
                if item.oid in doomed:
                    doomed_found += 1
                name = by_oid.get(item.oid)
                if name is not None and item.data is not None:
                    history[name].add(state_of(item.data)["data"]["value"])
            if last_twice:
                twice["blob" if last_twice <= blob_oids else "other"] += 1
        found["blob_records_twice"] = twice["blob"]
        if twice["other"]:
            problems.append(
                f"{twice['other']} transactions hold two records of an object "
                "that is not a blob"
            )
        # FileStorage checks the saved index against the records of the
        # last transaction, and rejects it when that stored an oid twice.
        found["index_explained"] = bool(last_twice) and last_twice <= blob_oids
        if not found["index_used"] and not found["index_explained"]:
            problems.append(
                "FileStorage ignored the index the server saved at shutdown "
                f"({found['index_size']} bytes): it does not match the file"
            )
        found["transactions"] = len(tids)
        if tids != sorted(tids) or len(set(tids)) != len(tids):
            problems.append("transactions do not iterate in increasing tid order")
        found["doomed"] = len(doomed)
        if doomed_found:
            problems.append(f"{doomed_found} records of killed voters' transactions")
        manager = transaction.TransactionManager()
        conn = db.open(transaction_manager=manager)
        try:
            _verify_owned(conn, owned, history, outcome, found)
            _verify_shared(conn, layout, outcome, found)
            _verify_blobs(conn, storage, layout, outcome, found)
        finally:
            manager.abort()
            conn.close()
    finally:
        db.close()
    acked = found["acked_commits"]
    found["expected_transactions"] = outcome.setup_transactions + acked
    if found["transactions"] != found["expected_transactions"]:
        problems.append(
            f"{found['transactions']} transactions in the file, but "
            f"{outcome.setup_transactions} seeding + {acked} acknowledged"
        )
    after = outcome.idle_after
    if after is not None and after.metrics is not None:
        found["monitor_commits"] = int(after.metrics["commits"])
        if found["monitor_commits"] != found["transactions"]:
            problems.append(
                f"the monitor counted {found['monitor_commits']} commits, the file "
                f"holds {found['transactions']} transactions"
            )
    found["size"] = path.stat().st_size
    found["blob_bytes"] = sum(
        f.stat().st_size for f in (server_dir / "blobs").rglob("*.blob")
    )
    return found


def _verify_owned(
    conn: Any,
    owned: dict[str, str],
    history: dict[str, set[int]],
    outcome: Outcome,
    found: dict[str, Any],
) -> None:
    problems = found["problems"]
    commits = increments = 0
    for name, oid in owned.items():
        state = outcome.clients.get(name)
        if state is None:
            problems.append(f"{name}: no result")
            continue
        current = conn.get(bytes.fromhex(oid))["value"]
        last = state["last"]
        commits += state["acked"]
        increments += state.get("increments", 0)
        if current != last:
            problems.append(f"{name}: holds {current}, last acknowledged {last}")
        missing = set(range(1, last + 1)) - history[name]
        if missing:
            problems.append(f"{name}: {len(missing)} acknowledged values not in file")
    shared = sum(len(s.get("shared", ())) for s in outcome.clients.values())
    blobs = sum(len(s.get("blobs", ())) for s in outcome.clients.values())
    found["owned_objects"] = len(owned)
    found["owned_commits"] = commits
    found["increments"] = increments
    found["shared_writes"] = shared
    found["blob_writes"] = blobs
    found["acked_commits"] = commits + increments + shared + blobs


def _verify_shared(
    conn: Any, layout: dict[str, Any], outcome: Outcome, found: dict[str, Any]
) -> None:
    problems = found["problems"]
    counter = conn.get(bytes.fromhex(layout["counter"]))
    found["counter"] = counter()
    if counter() != found["increments"]:
        problems.append(
            f"the counter holds {counter()}, {found['increments']} increments "
            "were acknowledged"
        )
    writes = [
        (tid, name, number)
        for name, state in outcome.clients.items()
        for tid, number in state.get("shared", ())
    ]
    shared = conn.get(bytes.fromhex(layout["shared"]))
    if writes:
        tid, name, number = max(writes)
        found["shared"] = f"{name} #{number}"
        if (shared["writer"], shared["n"]) != (name, number):
            problems.append(
                f"the shared mapping holds {shared['writer']} #{shared['n']}, the "
                f"last acknowledged write was {name} #{number}"
            )
        if shared._p_serial.hex() != tid:
            problems.append("the shared mapping's serial is not the last write's")


def _verify_blobs(
    conn: Any,
    storage: Any,
    layout: dict[str, Any],
    outcome: Outcome,
    found: dict[str, Any],
) -> None:
    problems = found["problems"]
    checked = size_total = 0
    for name, holder_oid in layout["holders"].items():
        state = outcome.clients.get(name)
        if state is None:
            problems.append(f"{name}: no result")
            continue
        holder = conn.get(bytes.fromhex(holder_oid))
        if holder["seq"] != state["last_seq"]:
            problems.append(
                f"{name}: holder at #{holder['seq']}, last acknowledged "
                f"#{state['last_seq']}"
            )
        for oid, tid, size, expected, seq in state["blobs"]:
            try:
                with open(
                    storage.loadBlob(bytes.fromhex(oid), bytes.fromhex(tid)), "rb"
                ) as file:
                    data = file.read()
            except Exception as exc:
                problems.append(f"{name} #{seq}: {type(exc).__name__}: {exc}")
                continue
            if len(data) != size or digest(data) != expected:
                problems.append(f"{name} #{seq}: the blob is not what was written")
            checked += 1
            size_total += size
    found["blobs_checked"] = checked
    found["blob_bytes_checked"] = size_total


# ---------------------------------------------------------------------------
# Judging


def slope(points: Sequence[tuple[float, float]]) -> float:
    """The least-squares slope of ``points`` (per unit of x)."""
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread_x = sum((x - mean_x) ** 2 for x, _ in points)
    if spread_x == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread_x


def post_warmup(outcome: Outcome) -> list[Sample]:
    start = WARMUP * outcome.options.seconds
    return [s for s in outcome.samples if s.at >= start - 0.01]


def flatness(outcome: Outcome) -> dict[str, Any]:
    """RSS and fd figures after warm-up (see the module's docstring)."""
    after = post_warmup(outcome)
    if len(after) < 2:
        return {}
    first, last = after[0], after[-1]
    span = (last.at - first.at) / 60
    rss_slope = slope([(s.at / 60, s.rss / MIB) for s in after])
    fds_slope = slope([(s.at / 60, s.fds) for s in after])
    bound = max(RSS_GROWTH_FRACTION * first.rss, RSS_GROWTH_FLOOR) / MIB
    growth = (last.rss - first.rss) / MIB
    fitted = rss_slope * span
    # fds against the first sample after warm-up, within the clients then
    # connected.
    margins = []
    for sample in after:
        connected = sample.connections if sample.connections is not None else 0
        margins.append((connected - abs(sample.fds - first.fds), sample))
    worst = min(margins, key=lambda pair: pair[0])
    return {
        "samples": len(after),
        "from": first.at,
        "to": last.at,
        "rss": [s.rss / MIB for s in after],
        "rss_first": first.rss / MIB,
        "rss_last": last.rss / MIB,
        "rss_slope": rss_slope,
        "rss_growth": growth,
        "rss_fitted_growth": fitted,
        "rss_bound": bound,
        "rss_ok": max(growth, fitted) <= bound,
        "hwm_first": first.hwm / MIB,
        "hwm_last": last.hwm / MIB,
        "fds": [s.fds for s in after],
        "fds_first": first.fds,
        "fds_last": last.fds,
        "fds_slope": fds_slope,
        "other_fds": [s.fds - s.sockets for s in after],
        "fd_margin": worst[0],
        "fd_worst": worst[1],
        "fds_ok": worst[0] >= 0,
    }


def fd_difference(before: Sample, after: Sample) -> str:
    """How the open fds of ``after`` differ from those of ``before``, by
    kind."""
    kinds = sorted(set(before.fd_kinds) | set(after.fd_kinds))
    changes = [
        f"{kind} {after.fd_kinds[kind] - before.fd_kinds[kind]:+d}"
        for kind in kinds
        if after.fd_kinds[kind] != before.fd_kinds[kind]
    ]
    return ", ".join(changes) or "the same kinds"


def histogram_figures(
    before: dict[str, Any], after: dict[str, Any]
) -> tuple[float, float, float, float] | None:
    """Count, mean, and the bucket bounds holding p50 and p99 of what a
    histogram observed between two scrapes."""
    count = after["count"] - before["count"]
    if count <= 0:
        return None
    earlier = dict(before["buckets"])
    buckets = [
        (bound, total - earlier.get(bound, 0)) for bound, total in after["buckets"]
    ]

    def bound_of(fraction: float) -> float:
        for bound, seen in buckets:
            if seen >= fraction * count:
                return bound
        return math.inf

    mean = (after["sum"] - before["sum"]) / count
    return count, mean, bound_of(0.5), bound_of(0.99)


def judge(outcome: Outcome) -> None:
    checks = outcome.checks
    total = outcome.error_total
    detail = (
        "none"
        if not total
        else ", ".join(f"{k} {v}" for k, v in outcome.error_counts.most_common())
    )
    checks.append(Check("errors", total == 0, detail))
    checks.append(
        Check("machinery", not outcome.failures, "; ".join(outcome.failures) or "ok")
    )
    missing = [kind for kind in OPERATIONS if not outcome.latencies.get(kind)]
    checks.append(
        Check(
            "operations",
            not missing,
            f"not done: {', '.join(missing)}" if missing else "every kind done",
        )
    )
    problems = outcome.verification.get("problems", ["not verified"])
    checks.append(Check("data", not problems, "; ".join(problems[:10]) or "verified"))
    checks.append(
        Check(
            "server exit",
            outcome.server_exit == 0,
            f"exit status {outcome.server_exit} on SIGTERM",
        )
    )
    bad = {k: v for k, v in outcome.server_log.items() if k in ("ERROR", "CRITICAL")}
    checks.append(
        Check(
            "server log",
            not bad and "other" not in outcome.server_log,
            ", ".join(f"{k} {v}" for k, v in sorted(outcome.server_log.items())),
        )
    )
    client_bad = {
        k: v
        for k, v in outcome.client_logs.items()
        if k.startswith(("ERROR", "CRITICAL"))
    }
    checks.append(
        Check(
            "client logs",
            not client_bad,
            ", ".join(f"{k} {v}" for k, v in sorted(outcome.client_logs.items()))
            or "nothing at WARNING or above",
        )
    )
    checks.append(
        Check(
            "worker stderr",
            not outcome.worker_stderr,
            "; ".join(outcome.worker_stderr)[:1000] or "empty",
        )
    )
    wanted = max(2, int(outcome.options.seconds / outcome.options.interval * 0.8))
    monitored = sum(1 for s in outcome.samples if s.metrics is not None)
    checks.append(
        Check(
            "sampling",
            len(outcome.samples) >= wanted
            and monitored == len(outcome.samples)
            and not outcome.sampling_errors,
            f"{len(outcome.samples)} samples ({monitored} with the monitor's), "
            f"{len(outcome.sampling_errors)} errors"
            + (f": {outcome.sampling_errors[0]}" if outcome.sampling_errors else ""),
        )
    )
    memory = outcome.memory
    if memory:
        checks.append(
            Check(
                "rss flat",
                memory["rss_ok"],
                f"growth after warm-up {memory['rss_growth']:+.1f} MiB (fitted "
                f"{memory['rss_fitted_growth']:+.1f}) ≤ {memory['rss_bound']:.1f} MiB",
            )
        )
        worst = memory["fd_worst"]
        checks.append(
            Check(
                "fds flat",
                memory["fds_ok"],
                f"worst: {worst.fds} fds at {worst.at:.0f} s vs {memory['fds_first']} "
                f"after warm-up, {worst.connections:.0f} clients connected",
            )
        )
    else:
        checks.append(Check("rss flat", False, "too few samples"))
        checks.append(Check("fds flat", False, "too few samples"))
    before, after = outcome.idle_before, outcome.idle_after
    if before is not None and after is not None:
        pooled = after.fd_kinds[READ_POOL] - before.fd_kinds[READ_POOL]
        others = (after.fds - after.fd_kinds[READ_POOL]) - (
            before.fds - before.fd_kinds[READ_POOL]
        )
        checks.append(
            Check(
                "fds idle",
                others <= IDLE_FD_SLACK and pooled <= after.threads,
                f"{after.fds} open idle after the clients, {before.fds} before "
                f"({fd_difference(before, after)}; {READ_POOL} read handles may "
                f"grow up to the server's {after.threads} threads, others by "
                f"{IDLE_FD_SLACK})",
            )
        )
    else:
        checks.append(Check("fds idle", False, "no idle sample"))
    status = after.status if after is not None else None
    if status is not None:
        idle = (
            status["state"] == "serving"
            and status["clients"] == status["connections"] == 0
            and status["active_transactions"] == status["waiting"] == 0
            and status["lock_holder"] is None
            and status["lock_queue"] == 0
        )
        checks.append(
            Check(
                "server idle",
                idle,
                f"/status.json after the clients: {status['state']}, "
                f"{status['clients']} clients, {status['active_transactions']} "
                f"transactions, commit lock "
                f"{'free' if status['lock_holder'] is None else 'held'}, "
                f"{status['waiting']} waiting, invalidation queue "
                f"{status['invalidation_queue']}",
            )
        )
    else:
        checks.append(Check("server idle", False, "no /status.json after"))


# ---------------------------------------------------------------------------
# The plot


def nice_step(span: float, ticks: int = 6) -> float:
    raw = max(span, 1e-9) / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def _ticks(low: float, high: float) -> tuple[float, float, list[float]]:
    step = nice_step(high - low)
    start = math.floor(low / step) * step
    stop = math.ceil(high / step) * step
    count = round((stop - start) / step)
    return start, stop, [start + i * step for i in range(count + 1)]


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) >= 1 or value == 0 else f"{value:.2g}"


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    color: str
    dash: str = ""
    markers: bool = False
    width: float = 2.0


def panel_svg(
    top: float,
    height: float,
    x_range: tuple[float, float],
    title: str,
    unit: str,
    series: list[Series],
    warmup: float,
    floor: float | None = None,
    ceiling: float | None = None,
) -> str:
    """One chart: axes, grid, warm-up band, lines, legend."""
    left, width = 90.0, 760.0
    values = [y for s in series for _, y in s.points]
    low = min(values) if floor is None else min(floor, *values)
    high = max(values) if ceiling is None else max(ceiling, *values)
    if high - low < 1:
        high, low = high + 0.5, low - 0.5
    pad = (high - low) * 0.08
    y0, y1, yticks = _ticks(max(0.0, low - pad), high + pad)
    x0, x1, xticks = _ticks(*x_range)

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * width

    def sy(y: float) -> float:
        return top + height - (y - y0) / (y1 - y0) * height

    parts = [
        f'<text x="{left}" y="{top - 12}" font-size="16" font-weight="bold">'
        f"{html.escape(title)}</text>",
        f'<rect x="{sx(x0):.1f}" y="{top}" width="{sx(warmup) - sx(x0):.1f}" '
        f'height="{height}" fill="#eeeeee"/>',
        f'<text x="{sx(x0) + 6:.1f}" y="{top + 16}" font-size="12" fill="#777">'
        f"warm-up ({WARMUP:.0%})</text>",
    ]
    for y in yticks:
        parts.append(
            f'<line x1="{left}" x2="{left + width}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" '
            'stroke="#dddddd"/>'
            f'<text x="{left - 8}" y="{sy(y) + 4:.1f}" font-size="12" '
            f'text-anchor="end">{_label(y)}</text>'
        )
    for x in xticks:
        parts.append(
            f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top}" y2="{top + height}" '
            'stroke="#eeeeee"/>'
            f'<text x="{sx(x):.1f}" y="{top + height + 18}" font-size="12" '
            f'text-anchor="middle">{_label(x)}</text>'
        )
    parts.append(
        f'<rect x="{left}" y="{top}" width="{width}" height="{height}" '
        'fill="none" stroke="#333"/>'
        f'<text x="{left - 62}" y="{top + height / 2}" font-size="13" '
        f'text-anchor="middle" transform="rotate(-90 {left - 62} {top + height / 2})">'
        f"{html.escape(unit)}</text>"
    )
    for number, line in enumerate(series):
        if not line.points:
            continue
        if line.markers:
            for x, y in line.points:
                parts.append(
                    f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" '
                    f'fill="{line.color}"/>'
                )
        else:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line.points)
            dash = f' stroke-dasharray="{line.dash}"' if line.dash else ""
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{line.color}" '
                f'stroke-width="{line.width}"{dash}/>'
            )
        ly = top + 14 + number * 20
        lx = left + width + 14
        if line.markers:
            mark = f'<circle cx="{lx + 12}" cy="{ly - 4}" r="3" fill="{line.color}"/>'
        else:
            dash = f' stroke-dasharray="{line.dash}"' if line.dash else ""
            mark = (
                f'<line x1="{lx}" x2="{lx + 24}" y1="{ly - 4}" y2="{ly - 4}" '
                f'stroke="{line.color}" stroke-width="{line.width}"{dash}/>'
            )
        parts.append(
            mark + f'<text x="{lx + 30}" y="{ly}" font-size="12">'
            f"{html.escape(line.label)}</text>"
        )
    return "\n".join(parts)


PLOT_SIZE = (1100, 800)


def plot_svg(outcome: Outcome) -> str:
    options, memory = outcome.options, outcome.memory
    samples = outcome.samples
    # Minutes on the x axis, or seconds for a run of under two minutes.
    scale = 60.0 if options.seconds >= 120 else 1.0
    x_unit = "minutes" if scale == 60 else "seconds"
    warmup = WARMUP * options.seconds / scale

    def points(value: Callable[[Sample], float | None]) -> list[tuple[float, float]]:
        found = []
        for sample in samples:
            y = value(sample)
            if y is not None:
                found.append((sample.at / scale, y))
        return found

    def metric(key: str, scale: float = 1.0) -> Callable[[Sample], float | None]:
        def read(sample: Sample) -> float | None:
            return None if sample.metrics is None else sample.metrics[key] / scale

        return read

    memory_series = [
        Series("VmRSS (/proc)", points(lambda s: s.rss / MIB), "#1f5fbf", width=2.5),
        Series("VmHWM (/proc)", points(lambda s: s.hwm / MIB), "#888888", dash="6 4"),
        Series("RSS (monitor)", points(metric("rss", MIB)), "#e07b00", markers=True),
    ]
    ceiling = None
    if memory:
        start, end = memory["from"] / scale, memory["to"] / scale
        first = memory["rss_first"]
        per_x = memory["rss_slope"] * scale / 60  # MiB per x unit
        intercept = sum(memory["rss"]) / len(memory["rss"]) - per_x * (
            sum(s.at / scale for s in post_warmup(outcome)) / memory["samples"]
        )
        memory_series.append(
            Series(
                f"least squares, {memory['rss_slope']:+.2f} MiB/min",
                [(start, intercept + per_x * start), (end, intercept + per_x * end)],
                "#c00000",
                dash="3 3",
            )
        )
        ceiling = first + memory["rss_bound"]
        memory_series.append(
            Series(
                f"bound: +{memory['rss_bound']:.0f} MiB",
                [(start, ceiling), (end, ceiling)],
                "#c00000",
                dash="1 5",
                width=1.5,
            )
        )
    fd_series = [
        Series("open fds (/proc)", points(lambda s: s.fds), "#2a8a2a", width=2.5),
        Series("open fds (monitor)", points(metric("fds")), "#e07b00", markers=True),
        Series("clients connected (monitor)", points(metric("connections")), "#7b3fbf"),
        Series(
            "fds that are not sockets",
            points(lambda s: s.fds - s.sockets),
            "#555555",
            dash="6 4",
        ),
    ]
    width, height = PLOT_SIZE
    before, after = outcome.idle_before, outcome.idle_after
    idle = ""
    if before is not None and after is not None:
        idle = (
            f"Idle before the clients: {before.rss / MIB:.1f} MiB, {before.fds} fds; "
            f"idle after: {after.rss / MIB:.1f} MiB, {after.fds} fds."
        )
    title = (
        f"zodbserver soak: {options.clients} clients for {_duration(options.seconds)}, "
        f"server sampled every {options.interval:g} s ({outcome.started})"
    )
    x_range = (0.0, options.seconds / scale)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">'
        f'<rect width="{width}" height="{height}" fill="white"/>'
        f'<text x="20" y="30" font-size="18" font-weight="bold">'
        f"{html.escape(title)}</text>"
        f'<text x="20" y="52" font-size="13" fill="#444">{html.escape(idle)}</text>'
        + panel_svg(
            100,
            260,
            x_range,
            "Server resident memory",
            "MiB",
            memory_series,
            warmup,
            ceiling=ceiling,
        )
        + panel_svg(
            450,
            260,
            x_range,
            "Server open file descriptors",
            "count",
            fd_series,
            warmup,
            floor=0.0,
        )
        + f'<text x="{90 + 380}" y="{450 + 260 + 45}" font-size="13" '
        f'text-anchor="middle">{x_unit} since the clients started</text>'
        "</svg>"
    )


def render_plot(outcome: Outcome, path: Path, workdir: Path) -> Path:
    """The SVG, screenshotted by headless Chromium into ``path``."""
    workdir.mkdir(parents=True, exist_ok=True)
    svg = workdir / "soak.svg"
    svg.write_text(plot_svg(outcome))
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = PLOT_SIZE
    with Browser(workdir) as browser:
        page = browser.open(svg.as_uri())
        page.command(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        page.screenshot(path)
    return path


# ---------------------------------------------------------------------------
# The report


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted ``values``."""
    rank = max(1, math.ceil(len(values) * fraction))
    return values[min(len(values), rank) - 1]


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 120 else f"{seconds:g} s"


def report(outcome: Outcome) -> str:
    options = outcome.options
    result = "all checks passed" if outcome.passed else "FAILED"
    failed = [c.name for c in outcome.checks if not c.ok]
    lines = [
        f"# Soak: {options.clients} concurrent clients for "
        f"{_duration(options.seconds)}",
        "",
        f"Run {outcome.started}: `python -m stress.soak {' '.join(options.argv)}` "
        f"(seed {options.seed}).",
        "",
        f"**Result: {result}{' (' + ', '.join(failed) + ')' if failed else ''}.**  "
        f"{outcome.error_total} errors; known findings: "
        f"{', '.join(known_findings(outcome)) or 'none'}.  "
        f"Total time {outcome.total / 60:.1f} min.",
        "",
    ]
    lines += _setup_section(outcome)
    lines += _checks_section(outcome)
    lines += _known_section(outcome)
    lines += _operations_section(outcome)
    lines += _errors_section(outcome)
    lines += _memory_section(outcome)
    lines += _server_view_section(outcome)
    lines += _verification_section(outcome)
    lines += _machine_section(outcome)
    return "\n".join(lines) + "\n"


def _setup_section(outcome: Outcome) -> list[str]:
    options = outcome.options
    roles = ", ".join(f"{outcome.counts[role]} {ROLE_TEXT[role]}" for role in ROLES)
    kinds = Counter(
        state["kind"]
        for state in outcome.clients.values()
        if state.get("role") not in ("churn-close", "churn-drop")
    )
    kinds_text = ", ".join(f"{n} {KIND_TEXT[k]}" for k, n in sorted(kinds.items()))
    return [
        "## Setup",
        "",
        f"Our server as a child process (`zodbserver.cli -C zeo.conf fg`: "
        f"FileStorage with a blob directory, `monitor-address` on), "
        f"{options.clients} clients in {outcome.processes} worker processes "
        f"({options.clients_per_process} client threads each, and one that "
        f"forks the vanishing churners): {roles}.  Each client its own "
        f"`ClientStorage`, alternately ZEO 6's and ours (steady clients: "
        f"{kinds_text}; churners alternate visit by visit).  {options.items} "
        f"items of {ITEM_SIZES[0]} B to {ITEM_SIZES[1] / 1000:g} KB to read; "
        f"readers' caches {SMALL_OBJECT_CACHE} objects and "
        f"{SMALL_STORAGE_CACHE // 1024} KB, minimized before each transaction of "
        f"{LOADS_PER_READ} loads.  Think times between operations (uniform, s): "
        + ", ".join(f"{r} {a:g}-{b:g}" for r, (a, b) in PAUSES.items())
        + f".  Server sampled every {options.interval:g} s; warm-up the first "
        f"{WARMUP:.0%} ({WARMUP * options.seconds:.0f} s).",
        "",
    ]


def _checks_section(outcome: Outcome) -> list[str]:
    lines = ["## Checks", "", "| check | | detail |", "|---|---|---|"]
    for check in outcome.checks:
        detail = check.detail.replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {check.name} | {'ok' if check.ok else '**FAILED**'} | {detail} |"
        )
    return [*lines, ""]


def _operations_section(outcome: Outcome) -> list[str]:
    duration = outcome.duration or outcome.options.seconds
    lines = [
        "## Operations",
        "",
        "Latencies in milliseconds, measured in the clients (each worker "
        "process runs its clients as threads, so they include waiting for "
        "the GIL and, on this machine, for a CPU).",
        "",
        "| operation | count | per s | errors | p50 | p90 | p99 | max "
        "| what is timed |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    errors = Counter[str]()
    for key, count in outcome.error_counts.items():
        errors[key.split(":")[0]] += count
    for kind, what in OPERATIONS.items():
        values = sorted(outcome.latencies.get(kind, ()))
        if values:
            figures = " | ".join(
                f"{percentile(values, p) * 1000:.1f}" for p in (0.5, 0.9, 0.99)
            )
            figures += f" | {values[-1] * 1000:.1f}"
        else:
            figures = "- | - | - | -"
        lines.append(
            f"| {kind} | {len(values)} | {len(values) / duration:.1f} | "
            f"{errors.get(kind, 0)} | {figures} | {what} |"
        )
    retries = sum(s.get("retries", 0) for s in outcome.clients.values())
    visits = Counter[str]()
    for state in outcome.clients.values():
        for kind, count in state.get("kinds", {}).items():
            visits[kind] += count
    close_visits = sum(
        s.get("visits", 0)
        for s in outcome.clients.values()
        if s["role"] == "churn-close"
    )
    last = outcome.idle_after.metrics if outcome.idle_after else None
    first = outcome.idle_before.metrics if outcome.idle_before else None
    lines += [
        "",
        f"Conflicts on the shared mapping retried (not errors): {retries}.  ",
    ]
    if last is not None and first is not None:
        loads = last["loads"] - first["loads"]
        client_loads = len(outcome.latencies.get("load", ()))
        lines[-1] += (
            f"The monitor counted {last['conflicts'] - first['conflicts']:.0f} "
            "conflicts answered with a ConflictError, "
            f"{last['resolved'] - first['resolved']:.0f} resolved on the server "
            f"(the counter's), {last['aborts'] - first['aborts']:.0f} aborts, and "
            f"{loads:.0f} loads on the server for the {client_loads} timed "
            "above (a load the client's cache answers never reaches the "
            "server; the writers, blob users and connecting churners also "
            "load what others' commits invalidated, and the root, untimed)."
        )
    lines += [
        "",
        f"Churners: {close_visits} visits that closed properly "
        f"({', '.join(f'{k} {v}' for k, v in sorted(visits.items()))}); "
        f"{sum(outcome.drops.values())} that vanished "
        f"({', '.join(f'{k} {v}' for k, v in sorted(outcome.drop_kinds.items()))}): "
        f"{outcome.drops.get('idle', 0)} killed idle after their loads, "
        f"{outcome.drops.get('voted', 0)} killed after their vote, holding the "
        "commit lock.",
        "",
    ]
    return lines


def _errors_section(outcome: Outcome) -> list[str]:
    lines = ["## Errors", ""]
    if not outcome.error_counts and not outcome.failures:
        return [*lines, "None.", ""]
    lines += ["| operation: error | count |", "|---|--:|"]
    for key, count in outcome.error_counts.most_common():
        lines.append(f"| {key} | {count} |")
    lines.append("")
    for error in outcome.errors[:10]:
        lines += [
            f"- {error['client']} at {error['at']} s, {error['kind']}: "
            f"{error['error']}",
        ]
        if error.get("traceback"):
            lines += ["", "```", error["traceback"].rstrip(), "```"]
    for failure in outcome.failures:
        lines.append(f"- machinery: {failure}")
    return [*lines, ""]


def _memory_section(outcome: Outcome) -> list[str]:
    memory = outcome.memory
    lines = ["## Memory and file descriptors", ""]
    if outcome.plot is not None:
        lines += [
            f"![RSS and fds over time]({outcome.plot.name})",
            "",
            f"Plot: `{_shown(outcome.plot)}`.",
            "",
        ]
    if not memory:
        return [*lines, "Too few samples.", ""]
    samples = post_warmup(outcome)
    rss = [s.rss / MIB for s in samples]
    fds = [s.fds for s in samples]
    other = memory["other_fds"]
    monitor_rss = [s.metrics["rss"] / MIB for s in samples if s.metrics]
    monitor_fds = [s.metrics["fds"] for s in samples if s.metrics]
    connections = [s.connections for s in samples if s.connections is not None]
    threads = [s.threads for s in samples]
    before, after = outcome.idle_before, outcome.idle_after

    def row(name: str, values: Sequence[float], unit: str, digits: int = 1) -> str:
        if not values:
            return f"| {name} | - | - | - | - | - |"
        fit = slope([(s.at / 60, v) for s, v in zip(samples, values, strict=False)])
        return (
            f"| {name} | {values[0]:.{digits}f} | {values[-1]:.{digits}f} | "
            f"{min(values):.{digits}f} | {max(values):.{digits}f} | "
            f"{fit:+.2f} {unit}/min |"
        )

    lines += [
        f"After warm-up: {memory['samples']} samples from {memory['from']:.0f} s to "
        f"{memory['to']:.0f} s.",
        "",
        "| series | first | last | min | max | least-squares slope |",
        "|---|--:|--:|--:|--:|--:|",
        row("VmRSS, MiB (/proc)", rss, "MiB"),
        row("RSS, MiB (monitor)", monitor_rss, "MiB"),
        row("VmHWM, MiB (/proc)", [s.hwm / MIB for s in samples], "MiB"),
        row("open fds (/proc)", fds, "fds", 0),
        row("open fds (monitor; its scrape is one)", monitor_fds, "fds", 0),
        row("fds that are not sockets (/proc)", other, "fds", 0),
        row("clients connected (monitor)", connections, "clients", 0),
        row("threads (/proc)", threads, "threads", 0),
        "",
        f"RSS growth after warm-up: {memory['rss_growth']:+.1f} MiB first to last, "
        f"{memory['rss_fitted_growth']:+.1f} MiB along the least-squares line; the "
        f"bound is max({RSS_GROWTH_FRACTION:.0%} of {memory['rss_first']:.1f} MiB, "
        f"{RSS_GROWTH_FLOOR / MIB:.0f} MiB) = {memory['rss_bound']:.1f} MiB: "
        f"{'within' if memory['rss_ok'] else '**exceeded**'}.  Open fds at every "
        f"sample after warm-up within the clients connected then of the "
        f"{memory['fds_first']} at its start: "
        f"{'yes' if memory['fds_ok'] else '**no**'} (smallest margin "
        f"{memory['fd_margin']:.0f}).",
        "",
    ]
    if before is not None and after is not None:
        lines += [
            f"Idle, before the clients came: VmRSS {before.rss / MIB:.1f} MiB, "
            f"{before.fds} fds ({before.sockets} sockets), {before.threads} "
            f"threads; after they had gone: VmRSS {after.rss / MIB:.1f} MiB, "
            f"VmHWM {after.hwm / MIB:.1f} MiB, {after.fds} fds ({after.sockets} "
            f"sockets), {after.threads} threads.  The fds after, against "
            f"before: {fd_difference(before, after)}.",
            "",
        ]
    cpu = [s.metrics["cpu"] for s in outcome.samples if s.metrics]
    if len(cpu) >= 2 and outcome.samples[-1].at > 0:
        span = outcome.samples[-1].at - outcome.samples[0].at
        lines += [
            f"Server CPU (monitor's `process_cpu_seconds_total`): "
            f"{cpu[-1] - cpu[0]:.0f} s over {span:.0f} s, "
            f"{(cpu[-1] - cpu[0]) / span:.0%} of one core.  The clients' worker "
            f"processes (and the churners they forked): {outcome.client_cpu:.0f} "
            f"CPU seconds, {outcome.client_cpu / outcome.duration:.0%} of one "
            f"core, on a machine of {os.cpu_count()}.",
            "",
        ]
    lines += _sample_table(outcome)
    return lines


def _server_view_section(outcome: Outcome) -> list[str]:
    """The monitor's commit histograms over the run (after minus before)."""
    before, after = outcome.idle_before, outcome.idle_after
    if before is None or after is None or not before.histograms or not after.histograms:
        return []
    lines = [
        "## The server's view of commits",
        "",
        "From the monitor's histograms (`/metrics`, idle after minus idle "
        "before), one observation per committed transaction; p50 and p99 are "
        "the upper bounds of the buckets that hold them.",
        "",
        "| histogram | commits | mean, ms | p50 ≤, ms | p99 ≤, ms |",
        "|---|--:|--:|--:|--:|",
    ]
    for key, name in HISTOGRAMS.items():
        figures = histogram_figures(before.histograms[key], after.histograms[key])
        if figures is None:
            lines.append(f"| {key} (`{name}`) | 0 | - | - | - |")
            continue
        count, mean, p50, p99 = figures
        lines.append(
            f"| {key} (`{name}`) | {count:.0f} | {mean * 1000:.1f} | "
            f"{p50 * 1000:g} | {p99 * 1000:g} |"
        )
    return [*lines, ""]


def _sample_table(outcome: Outcome) -> list[str]:
    every = 60.0 if outcome.options.seconds >= 300 else outcome.options.seconds / 10
    rows = [outcome.idle_before] if outcome.idle_before else []
    next_at = 0.0
    for sample in outcome.samples:
        if sample.at >= next_at - 0.01:
            rows.append(sample)
            next_at = sample.at + every - 0.5
    if outcome.samples and rows[-1] is not outcome.samples[-1]:
        rows.append(outcome.samples[-1])
    if outcome.idle_after:
        rows.append(outcome.idle_after)
    lines = [
        "Samples (VmRSS and VmHWM from /proc, MiB; monitor's RSS; fds: /proc, "
        "of them sockets, monitor's; clients connected, commits since the "
        "start, 1-min load):",
        "",
        "| t (s) | VmRSS | VmHWM | RSS (monitor) | fds | sockets | fds (monitor) "
        "| threads | connected | commits | load |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in rows:
        m = s.metrics or {}
        at = s.phase if s.phase != "load" else f"{s.at:.0f}"
        lines.append(
            f"| {at} | {s.rss / MIB:.1f} | {s.hwm / MIB:.1f} | "
            f"{m.get('rss', 0) / MIB:.1f} | {s.fds} | {s.sockets} | "
            f"{m.get('fds', 0):.0f} | {s.threads} | {m.get('connections', 0):.0f} | "
            f"{m.get('commits', 0):.0f} | {s.load_average:.1f} |"
        )
    return [*lines, ""]


def _verification_section(outcome: Outcome) -> list[str]:
    found = outcome.verification
    if not found or "acked_commits" not in found:
        return ["## Verification", "", "Not completed.", ""]
    problems = found["problems"]
    return [
        "## Verification",
        "",
        "Once the server had stopped, with the file opened read-only:",
        "",
        "| | |",
        "|---|---|",
        f"| writers' and closing churners' objects | {found['owned_objects']}: "
        f"each holds its last acknowledged value; all {found['owned_commits']} "
        "acknowledged values in the history |",
        f"| counter | {found['counter']} = {found['increments']} acknowledged "
        "increments |",
        f"| shared mapping | holds the write acknowledged last "
        f"({found.get('shared', '-')}) of {found['shared_writes']} |",
        f"| blobs | {found['blobs_checked']} acknowledged revisions of "
        f"{found['blob_writes']}, {found['blob_bytes_checked'] / MIB:.0f} MiB, "
        "each with its content; every holder at its last revision |",
        f"| killed voters | {found['doomed']} voted transactions of killed "
        "children: none in the file |",
        f"| transactions | {found['transactions']} in the file = "
        f"{outcome.setup_transactions} seeding + {found['acked_commits']} "
        f"acknowledged commits; the monitor counted "
        f"{found.get('monitor_commits', '-')} |",
        f"| fstest | {found['fstest']}; Data.fs {found['size'] / MIB:.1f} MiB, "
        f"blobs {found['blob_bytes'] / MIB:.0f} MiB |",
        f"| blob records | {found['blob_records_twice']} transactions hold two "
        "records of a blob's oid (known finding S1) |",
        f"| index | the server's Data.fs.index, saved at shutdown, "
        f"{_index_text(found)} |",
        f"| problems | {'; '.join(problems) if problems else 'none'} |",
        "",
    ]


def _index_text(found: dict[str, Any]) -> str:
    if found["index_used"]:
        return "used on reopening"
    if found["index_explained"]:
        return (
            "ignored on reopening: the run ended on a blob write, whose "
            "transaction holds the blob twice (known finding S1)"
        )
    return "**ignored** on reopening"


def known_findings(outcome: Outcome) -> dict[str, str]:
    """The known findings this run met, with what it saw of each."""
    found = outcome.verification
    seen = {}
    if found.get("blob_records_twice"):
        index = (
            "the index was ignored at the reopening (the run ended on one)"
            if not found["index_used"]
            else "the index was used at the reopening (the run did not end on one)"
        )
        seen["S1"] = (
            f"{found['blob_records_twice']} transactions hold a blob's oid "
            f"twice (the {found['blob_writes']} blob writes and the seeding); "
            f"{index}"
        )
    return seen


def _known_section(outcome: Outcome) -> list[str]:
    seen = known_findings(outcome)
    if not seen:
        return []
    lines = [
        "## Known findings",
        "",
        "Counted apart: they do not fail the run.",
        "",
    ]
    for name, detail in seen.items():
        lines.append(f"- **{name}**: {KNOWN_FINDINGS[name]}.  This run: {detail}.")
    return [*lines, ""]


def _machine_section(outcome: Outcome) -> list[str]:
    details = outcome.machine
    loads = [s.load_average for s in outcome.samples] or [0.0]
    packages = ", ".join(f"{k} {v}" for k, v in details["packages"].items() if v)
    ordered = sorted(loads)
    return [
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {details['cpu_model']}, nproc {details['affinity']} "
        f"(cpu_count {details['cores']}) |",
        f"| RAM | {details['ram_gib']} GiB |",
        f"| kernel | {details['kernel']} |",
        f"| Python | {details['python_full']} |",
        f"| packages | {packages} |",
        f"| filesystem | {details['filesystem']} |",
        f"| `uptime` before | {outcome.uptime_before} |",
        f"| `uptime` after | {outcome.uptime_after} |",
        f"| 1-min load during the run | min {ordered[0]:.1f}, median "
        f"{percentile(ordered, 0.5):.1f}, max {ordered[-1]:.1f} "
        f"({len(loads)} samples) |",
        "",
        "Other jobs may share the machine: a load above the core count means "
        "the server and the clients waited for a CPU, which lengthens every "
        "latency above; the memory and fd figures do not depend on it.",
        "",
    ]


def _shown(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(ROOT))
    return str(path)


def machine_details(directory: Path) -> dict[str, Any]:
    details = machine()
    details["affinity"] = len(os.sched_getaffinity(0))
    details["kernel"] = f"{platform.release()} ({platform.version()})"
    details["python_full"] = sys.version.replace("\n", " ")
    details["filesystem"] = filesystem(directory)
    return details


def filesystem(directory: Path) -> str:
    """The mount (device, type) holding ``directory``, and its free space."""
    best: tuple[str, str, str] | None = None
    target = str(directory.resolve())
    with contextlib.suppress(OSError), open("/proc/self/mounts") as file:
        for line in file:
            device, mount, kind, *_ = line.split()
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and (best is None or len(mount) > len(best[1])):
                best = (device, mount, kind)
    if best is None:
        return "unknown"
    usage = shutil.disk_usage(directory)
    return (
        f"{best[2]} on {best[0]} mounted at {best[1]}; "
        f"{usage.free / 2**30:.0f} GiB free of {usage.total / 2**30:.0f} GiB"
    )


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--worker"]:
        return worker_main(arguments[1])
    options = parse(arguments)
    outcome = run(options)
    text = report(outcome)
    print(text)
    if options.output is not None:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text(text)
        log(options, f"wrote {options.output}")
    if not outcome.passed or options.keep:
        log(options, f"the data are in {outcome.directory}")
    else:
        shutil.rmtree(outcome.directory, ignore_errors=True)
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
