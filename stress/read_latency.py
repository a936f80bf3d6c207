"""Read latency while commits fsync: zodbserver against ZEO 6.

Does a read wait behind a commit's fsync?  FileStorage's ``tpc_finish``
holds its file pool's write lock (and ``_lock``) across the flush and
fsync, and ``loadBefore`` waits on that pool, so a read that arrives
during a finish waits for the disk -- on whichever thread asked for it.
This measures how much of that a reading client sees::

    .venv/bin/python -m stress.read_latency [--writers 4] [--seconds 10]
        [--objects 2000] [--runs 3] [--output FILE]
        [--ours-pythonpath DIR] [--directory DIR]

For each run and each server kind (the order rotates from run to run, so
neither always goes first), a fresh copy of one seeded FileStorage
(``--objects`` objects of about 1 KB) is served by a real server process,
with its fsync left on, on the disk under ``--directory`` (the system's
temporary directory by default).  On that server two conditions are
measured for ``--seconds`` each:

``baseline``  one reader process alone;
``writers``   the reader while ``--writers`` writer processes commit small
              transactions (1 to 10 objects, each writer its own objects,
              so there are no conflicts) back to back.

Every client is ZEO 6's ``ClientStorage`` against both servers, so the
client side is identical.  The reader sends ``loadBefore(oid, tid)`` for a
random seeded oid, with ``tid`` just after the last transaction it has
seen (the current revision), one call after the other, timing each.  It
calls through ``ClientStorage._server.call("loadBefore", ...)``: the same
``loadBefore`` message, sent from the caller's thread through the client's
I/O thread and answered the same way, that ``ClientStorage.loadBefore``
sends on a cache miss -- without the cache lookup before it and the cache
store after it, so every call is a round trip to the server and none is
answered from the client's cache.

The figures are percentiles of all the reads of all runs of a server and
condition (p50, p90, p99, p99.9, max, in milliseconds), the writers'
commits per second and commit latency, the ratios of ours to ZEO's, and
each run's p99 to show the spread.  The reader is closed-loop: a read
that stalls delays the next one rather than adding reads that also wait,
so the tail figures count stalls, not the time spent in them.

A/B of two versions of our server: ``--ours-pythonpath DIR`` (or the
environment variable ``ZODBSERVER_OURS_PYTHONPATH``) adds a third server
kind, ``ours-old``: our server started with ``PYTHONPATH=DIR``, so that
``DIR/zodbserver`` is the one it imports.  For example::

    git worktree add /tmp/old <rev>     # or: git archive <rev> src | tar -x -C /tmp/old
    .venv/bin/python -m stress.read_latency --ours-pythonpath /tmp/old/src

``ours`` is the zodbserver this interpreter imports (the working tree in
an editable install).  The report names the file each kind imported.
"""

from __future__ import annotations

import argparse
import array
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.context import SpawnContext, SpawnProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests"
# The server process is the test suite's, in tests/support, as pytest finds
# it (pythonpath = ["tests"]).
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from support.server_processes import ServerProcess  # noqa: E402

#: Where a PYTHONPATH for the ``ours-old`` server may come from.
PYTHONPATH_ENVIRONMENT = "ZODBSERVER_OURS_PYTHONPATH"
OURS = "ours"
OURS_OLD = "ours-old"
ZEO = "zeo"
BASELINE = "baseline"
WRITERS = "writers"
CONDITIONS = (BASELINE, WRITERS)
#: Size of an object's payload; its pickle is a little larger.
PAYLOAD_BYTES = 1000
#: Objects per transaction of a writer: uniformly from this range.
TRANSACTION_SIZES = (1, 10)
#: Reads before the measured ones (connection set up, page cache warm).
WARMUP_READS = 200
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
CONNECT_TIMEOUT = 30.0
#: Percentiles reported, as (label, fraction).
PERCENTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999))


# -- the seed database ----------------------------------------------------


def seed(path: Path, count: int) -> tuple[list[bytes], bytes]:
    """A FileStorage at ``path`` holding ``count`` objects, committed in one
    transaction; their oids and that transaction's tid."""
    from ZODB.Connection import TransactionMetaData
    from ZODB.FileStorage import FileStorage
    from ZODB.utils import p64, z64

    storage = FileStorage(str(path), create=True)
    try:
        oids = [p64(number) for number in range(1, count + 1)]
        metadata = TransactionMetaData(description="seed")
        storage.tpc_begin(metadata)
        for oid in oids:
            storage.store(oid, z64, record(os.urandom(PAYLOAD_BYTES)), "", metadata)
        storage.tpc_vote(metadata)
        tid: bytes = storage.tpc_finish(metadata)
    finally:
        storage.close()
    return oids, tid


def record(payload: bytes) -> bytes:
    """An object's pickle: ZODB's test object ``MinPO`` holding ``payload``."""
    from ZODB.tests.MinPO import MinPO
    from ZODB.tests.StorageTestBase import zodb_pickle

    data: bytes = zodb_pickle(MinPO(payload))
    return data


def fsync_probe(directory: Path, count: int = 200) -> list[float]:
    """Seconds each of ``count`` fsyncs took, each after appending 8 KB to a
    file in ``directory``: what the disk there charges a commit."""
    path = directory / "fsync-probe"
    times: list[float] = []
    with open(path, "wb") as file:
        for _ in range(count):
            file.write(os.urandom(8192))
            file.flush()
            started = time.perf_counter()
            os.fsync(file.fileno())
            times.append(time.perf_counter() - started)
    path.unlink()
    return sorted(times)


# -- the servers ----------------------------------------------------------


def environment(pythonpath: str | None) -> dict[str, str]:
    """What a server gets in its environment on top of ours: ``pythonpath``
    in front of our ``PYTHONPATH``, if given."""
    if pythonpath is None:
        return {}
    paths = [pythonpath, *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def imported_from(server: ServerProcess) -> str:
    """The file of the server package ``server``'s process imports."""
    package = "ZEO" if server.kind == ZEO else "zodbserver"
    return subprocess.run(
        [sys.executable, "-c", f"import {package}; print({package}.__file__)"],
        env={**os.environ, **server.environment},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


# -- the client processes -------------------------------------------------


def open_client(address: tuple[str, int]) -> Any:
    """ZEO 6's ClientStorage, connected, with a small cache (the reader
    bypasses it and the writers never read)."""
    from ZEO.ClientStorage import ClientStorage

    return ClientStorage(address, wait_timeout=CONNECT_TIMEOUT, cache_size=1 << 20)


def writer(
    address: tuple[str, int],
    oids: list[bytes],
    serial: bytes,
    seconds: float,
    ready: Queue[str],
    go: Event,
    results: Queue[tuple[str, Any]],
) -> None:
    """Commit transactions of 1 to 10 of ``oids`` for ``seconds`` after
    ``go``; puts the number of commits, the time taken and each commit's
    latency."""
    from ZODB.Connection import TransactionMetaData

    storage = open_client(address)
    try:
        payloads = [record(os.urandom(PAYLOAD_BYTES)) for _ in range(16)]
        serials = dict.fromkeys(oids, serial)
        chooser = random.Random(os.getpid())
        latencies = array.array("d")
        ready.put("writer")
        go.wait()
        started = time.perf_counter()
        deadline = started + seconds
        now = started
        while now < deadline:
            count = chooser.randint(*TRANSACTION_SIZES)
            chosen = chooser.sample(oids, min(count, len(oids)))
            metadata = TransactionMetaData()
            storage.tpc_begin(metadata)
            for oid in chosen:
                data = chooser.choice(payloads)
                storage.store(oid, serials[oid], data, "", metadata)
            storage.tpc_vote(metadata)
            tid = storage.tpc_finish(metadata)
            for oid in chosen:
                serials[oid] = tid
            finished = time.perf_counter()
            latencies.append(finished - now)
            now = finished
        results.put(("writer", (len(latencies), now - started, latencies.tobytes())))
    except BaseException as error:
        results.put(("error", f"writer: {error!r}"))
        raise
    finally:
        storage.close()


def reader(
    address: tuple[str, int],
    oids: list[bytes],
    seconds: float,
    ready: Queue[str],
    go: Event,
    results: Queue[tuple[str, Any]],
) -> None:
    """Time ``loadBefore`` round trips of random ``oids`` for ``seconds``
    after ``go``; puts the latencies."""
    from ZODB.utils import p64, u64

    storage = open_client(address)
    try:
        call = storage._server.call  # the RPC a cache miss makes
        chooser = random.Random(os.getpid())

        def read(oid: bytes) -> None:
            before = p64(u64(storage.lastTransaction()) + 1)
            if call("loadBefore", oid, before) is None:
                raise AssertionError(f"no revision of {u64(oid)} before {before!r}")

        for _ in range(WARMUP_READS):
            read(chooser.choice(oids))
        latencies = array.array("d")
        ready.put("reader")
        go.wait()
        now = time.perf_counter()
        deadline = now + seconds
        while now < deadline:
            oid = chooser.choice(oids)
            started = now
            read(oid)
            now = time.perf_counter()
            latencies.append(now - started)
        results.put(("reader", latencies.tobytes()))
    except BaseException as error:
        results.put(("error", f"reader: {error!r}"))
        raise
    finally:
        storage.close()


@dataclass
class Sample:
    """What one condition on one server measured in one run."""

    reads: array.array[float]
    seconds: float
    commits: int = 0
    commit_latencies: array.array[float] = field(
        default_factory=lambda: array.array("d")
    )

    @property
    def commits_per_second(self) -> float:
        return self.commits / self.seconds if self.seconds else 0.0


def measure(
    context: SpawnContext,
    address: tuple[str, int],
    oids: list[bytes],
    serial: bytes,
    writers: int,
    seconds: float,
) -> Sample:
    """One reader, with ``writers`` writers, against the server at
    ``address`` for ``seconds``."""
    ready: Queue[str] = context.Queue()
    results: Queue[tuple[str, Any]] = context.Queue()
    go = context.Event()
    children: list[SpawnProcess] = [
        context.Process(
            target=writer,
            args=(address, oids[index::writers], serial, seconds, ready, go, results),
        )
        for index in range(writers)
    ]
    children.append(
        context.Process(
            target=reader, args=(address, oids, seconds, ready, go, results)
        )
    )
    try:
        for child in children:
            child.start()
        for _ in children:
            ready.get(timeout=START_TIMEOUT)
        go.set()
        sample = Sample(array.array("d"), seconds)
        elapsed = 0.0
        for _ in children:
            what, value = results.get(timeout=seconds + STOP_TIMEOUT)
            if what == "error":
                raise RuntimeError(value)
            if what == "reader":
                sample.reads.frombytes(value)
            else:
                commits, took, latencies = value
                sample.commits += commits
                sample.commit_latencies.frombytes(latencies)
                elapsed = max(elapsed, took)
        if writers:
            sample.seconds = elapsed
        for child in children:
            child.join(STOP_TIMEOUT)
        return sample
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join(STOP_TIMEOUT)


# -- the matrix -----------------------------------------------------------


@dataclass
class Options:
    writers: int
    seconds: float
    objects: int
    runs: int
    output: Path | None
    ours_pythonpath: str | None
    directory: str | None


def parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m stress.read_latency",
        description="Read latency during commits: zodbserver against ZEO 6.",
    )
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path, help="also write the table here")
    parser.add_argument(
        "--ours-pythonpath",
        metavar="DIR",
        default=os.environ.get(PYTHONPATH_ENVIRONMENT) or None,
        help="add an 'ours-old' server importing zodbserver from DIR "
        f"(default: ${PYTHONPATH_ENVIRONMENT})",
    )
    parser.add_argument(
        "--directory",
        help="where the databases go (default: the temporary directory)",
    )
    arguments = parser.parse_args(argv)
    if arguments.writers < 1 or arguments.objects < 1 or arguments.runs < 1:
        parser.error("--writers, --objects and --runs must be positive")
    return Options(
        writers=arguments.writers,
        seconds=arguments.seconds,
        objects=arguments.objects,
        runs=arguments.runs,
        output=arguments.output,
        ours_pythonpath=arguments.ours_pythonpath,
        directory=arguments.directory,
    )


def run(options: Options) -> str:
    """Run the matrix; the Markdown report."""
    kinds = [OURS, ZEO]
    pythonpaths: dict[str, str | None] = {OURS: None, ZEO: None}
    if options.ours_pythonpath:
        kinds.insert(1, OURS_OLD)
        pythonpaths[OURS_OLD] = os.path.abspath(options.ours_pythonpath)
    context = multiprocessing.get_context("spawn")
    samples: dict[tuple[str, str], list[Sample]] = {
        (kind, condition): [] for kind in kinds for condition in CONDITIONS
    }
    imported: dict[str, str] = {}
    load_before = os.getloadavg()
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="read-latency-", dir=options.directory))
    try:
        template = root / "seed.fs"
        oids, serial = seed(template, options.objects)
        fsyncs = fsync_probe(root)
        for number in range(options.runs):
            shift = number % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                directory = root / f"run{number + 1}-{kind}"
                directory.mkdir()
                shutil.copy(template, directory / "Data.fs")
                shutil.copy(f"{template}.index", directory / "Data.fs.index")
                server = ServerProcess(
                    ZEO if kind == ZEO else OURS,
                    directory,
                    environment=environment(pythonpaths[kind]),
                )
                imported.setdefault(kind, imported_from(server))
                with server:
                    server.start()
                    for condition in CONDITIONS:
                        writers = options.writers if condition == WRITERS else 0
                        sample = measure(
                            context,
                            server.address,
                            oids,
                            serial,
                            writers,
                            options.seconds,
                        )
                        samples[kind, condition].append(sample)
                        print(
                            f"run {number + 1} {kind:8} {condition:8} "
                            f"p99 {percentile(sorted(sample.reads), 0.99) * 1e3:.2f} ms"
                            f"  {sample.commits_per_second:.0f} commits/s",
                            file=sys.stderr,
                            flush=True,
                        )
                shutil.rmtree(directory, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    took = time.monotonic() - started
    return report(
        options,
        kinds,
        samples,
        imported,
        root,
        fsyncs,
        took,
        (load_before, os.getloadavg()),
    )


# -- the report -----------------------------------------------------------


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Figures:
    """The pooled figures of one server and condition, in milliseconds."""

    reads: int
    reads_per_second: float
    latencies: dict[str, float]
    commits_per_second: float
    commit_p50: float
    commit_p99: float
    run_p99: list[float]


def figures(runs: list[Sample]) -> Figures:
    reads = sorted(value for sample in runs for value in sample.reads)
    commits = sorted(value for sample in runs for value in sample.commit_latencies)
    latencies = {label: percentile(reads, q) * 1e3 for label, q in PERCENTILES}
    latencies["max"] = reads[-1] * 1e3 if reads else math.nan
    reading_time = sum(sample.seconds for sample in runs)
    return Figures(
        reads=len(reads),
        reads_per_second=len(reads) / reading_time if reading_time else 0.0,
        latencies=latencies,
        commits_per_second=sum(s.commits_per_second for s in runs) / len(runs),
        commit_p50=percentile(commits, 0.5) * 1e3,
        commit_p99=percentile(commits, 0.99) * 1e3,
        run_p99=[percentile(sorted(s.reads), 0.99) * 1e3 for s in runs],
    )


def ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def ratio(ours: float, theirs: float) -> str:
    if math.isnan(ours) or math.isnan(theirs) or not theirs:
        return "-"
    return f"{ours / theirs:.2f}"


def report(
    options: Options,
    kinds: list[str],
    samples: dict[tuple[str, str], list[Sample]],
    imported: dict[str, str],
    root: Path,
    fsyncs: list[float],
    took: float,
    load: tuple[tuple[float, float, float], tuple[float, float, float]],
) -> str:
    table = {key: figures(runs) for key, runs in samples.items()}
    labels = [label for label, _ in PERCENTILES] + ["max"]
    lines = [
        "## Read latency during commits: zodbserver against ZEO 6",
        "",
        f"{options.writers} writers committing 1-10 objects of ~1 KB per "
        f"transaction back to back; one reader timing `loadBefore` round "
        f"trips of random objects out of {options.objects}; "
        f"{options.runs} runs × {options.seconds:g} s per server and "
        "condition, servers alternating.  Latencies in ms.",
        "",
        "| server | condition | reads | reads/s | "
        + " | ".join(labels)
        + " | commits/s | commit p50 | commit p99 |",
        "|---|---|--:|--:|" + "--:|" * len(labels) + "--:|--:|--:|",
    ]
    for condition in CONDITIONS:
        for kind in kinds:
            f = table[kind, condition]
            commit_cells = (
                [f"{f.commits_per_second:.0f}", ms(f.commit_p50), ms(f.commit_p99)]
                if condition == WRITERS
                else ["-", "-", "-"]
            )
            lines.append(
                f"| {kind} | {condition} | {f.reads} | {f.reads_per_second:.0f} | "
                + " | ".join(ms(f.latencies[label]) for label in labels)
                + " | "
                + " | ".join(commit_cells)
                + " |"
            )
    pairs = [(kind, ZEO) for kind in kinds if kind != ZEO]
    if OURS_OLD in kinds:
        pairs.append((OURS, OURS_OLD))
    lines += [
        "",
        "Ratios (latency: below 1 is faster; commits/s: above 1 is more):",
        "",
        "| ratio | condition | " + " | ".join(labels) + " | commits/s |",
        "|---|---|" + "--:|" * len(labels) + "--:|",
    ]
    for mine, theirs in pairs:
        for condition in CONDITIONS:
            a, b = table[mine, condition], table[theirs, condition]
            commits = (
                ratio(a.commits_per_second, b.commits_per_second)
                if condition == WRITERS
                else "-"
            )
            lines.append(
                f"| {mine} / {theirs} | {condition} | "
                + " | ".join(
                    ratio(a.latencies[label], b.latencies[label]) for label in labels
                )
                + f" | {commits} |"
            )
    lines += [
        "",
        "p99 of each run (ms), and writers' commits/s of each run:",
        "",
        "| server | condition | "
        + " | ".join(f"run {n + 1}" for n in range(options.runs))
        + " |",
        "|---|---|" + "--:|" * options.runs,
    ]
    for condition in CONDITIONS:
        for kind in kinds:
            runs = samples[kind, condition]
            cells = [
                ms(p99)
                + (f" ({s.commits_per_second:.0f}/s)" if condition == WRITERS else "")
                for p99, s in zip(table[kind, condition].run_p99, runs, strict=True)
            ]
            lines.append(f"| {kind} | {condition} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Servers: "
        + "; ".join(f"{kind} imports `{imported.get(kind, '?')}`" for kind in kinds)
        + ".",
        f"Databases under `{root.parent}`; an fsync after appending 8 KB "
        "there took "
        + ", ".join(
            f"{label} {ms(percentile(fsyncs, q) * 1e3)}" for label, q in PERCENTILES
        )
        + f", max {ms(fsyncs[-1] * 1e3)} ms.",
        f"Took {took:.0f} s; load average "
        f"{' '.join(f'{v:.2f}' for v in load[0])} before, "
        f"{' '.join(f'{v:.2f}' for v in load[1])} after.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    text = run(options)
    print(text)
    if options.output is not None:
        options.output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
