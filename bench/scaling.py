"""``python -m bench.scaling``: how the cost grows, ZEO 6 and ours side by side.

The matrix of ``python -m bench`` compares the stacks on one client; this
compares them as the work grows, in one run on the same data: ZEO's client
against ZEO's server (``zeo-zeo``, the baseline) and ours against ours
(``ours-ours``), each server a child process on its own copy of the seed.

``fanout_N``
    One worker process commits one-object transactions for
    ``--commit-seconds`` while ``N`` other clients are connected, idle, each
    a ``ZODB.DB`` with an open connection holding the object committed (so
    every commit invalidates every one of their caches).  The listeners live
    ``LISTENERS_PER_PROCESS`` to a process.  Commits/s and p50/p99; the
    committer's, the server's and the listeners' CPU time (read from
    ``/proc``) from the start of the commits until every listener has seen
    the last one, per commit and per invalidation received.  ``fanout_0``
    is the one-object commit latency.
``ceiling_N``
    ``N`` reader processes, each a new client with an empty cache, call
    ``loadBefore`` once per oid on disjoint slices of ``pool`` objects:
    aggregate loads/s (all loads over the span from the first reader's
    start to the last one's end) and p50/p99; the server's CPU per load and
    the share of its core it used, hence ``ceiling``: the loads/s at which
    the server would saturate its core (1 / its CPU per load).
``delay_idle``, ``delay_busy``
    This process commits one object every ``DELAY_INTERVAL`` while a
    watcher process (a client with a ``ZODB.DB``) notes when each
    invalidation reaches its DB, on the system-wide monotonic clock.  The
    value is the p99 from the commit's start here to that moment (when the
    change is visible elsewhere); ``after_return_*`` count from the commit
    returning here, which is negative when the invalidation overtakes the
    committer's reply.  ``busy``: a thread of the watcher renders strings
    in Python the whole time (as a Zope thread rendering a page).

The ``floor`` system runs ``fanout`` and ``ceiling`` against
``bench.echo``: a uvloop server answering at once, with raw-socket clients
and listeners that each sleep in their own uvloop thread, no storage, no
protocol: what the machine costs per round trip and per message.

Every workload alternates the systems (A B, A B, ...) ``--runs`` times and
reports medians and the ratio ours / ZEO.  Results go to ``scaling.json``,
``SCALING.md`` and PNG plots (``scaling_*.png``) in ``--output``; when
that directory holds the matrix's ``results.json``, its ``RESULTS.md`` is
written again with the plots embedded.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import transaction
import ZODB

from . import big as big_db
from . import report
from .clients import OURS, ZEO
from .data import build_seed, copy_seed
from .processes import START_TIMEOUT, Child, Children, cpu_seconds, start_server
from .run import DEFAULT_OUTPUT, _compile_bytecode, _object_oids
from .systems import System

#: The client and server kind of the floor: ``bench.echo``.
ECHO = "echo"

#: (key, client kind, server kind, label); the first is the baseline.
SYSTEMS = (
    ("zeo-zeo", ZEO, "zeo", "ZEO 6"),
    ("ours-ours", OURS, "ours", "zodbserver"),
    ("floor", ECHO, ECHO, "floor (bench.echo)"),
)
BASELINE = SYSTEMS[0][0]
OURS_KEY = SYSTEMS[1][0]
FLOOR = SYSTEMS[2][0]
#: ``--compare-src``: our server and client from another source tree.
OLD = "ours-old"
LISTENERS_PER_PROCESS = 32
#: Seconds between two commits of the invalidation-delay workloads.
DELAY_INTERVAL = 0.01
#: How long the listeners may take to catch up after the last commit.
CATCH_UP_TIMEOUT = 120.0


@dataclass(frozen=True)
class Settings:
    fanout: tuple[int, ...]
    readers: tuple[int, ...]
    pool: int
    commit_seconds: float
    delay_commits: int


@dataclass
class Measurement:
    value: float
    extras: dict[str, float] = field(default_factory=dict)


@dataclass
class Context:
    settings: Settings
    oids: list[bytes]
    children: Children
    temp: str
    #: With ``--big``: each system's server on the big database.
    big: dict[str, big_db.BigServer] = field(default_factory=dict)


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    unit: str
    better: str
    measure: Callable[[System, Context], Measurement]
    #: The curve it is a point of (``fanout``, ``ceiling``), and its x.
    curve: str | None = None
    x: int = 0
    #: Measured on the floor too (``bench.echo`` has no invalidations to
    #: apply in a DB).
    floor: bool = True
    #: A ``--big`` workload: measured once per system, on the big database.
    big: bool = False


def big_workloads(settings: big_db.BigSettings) -> list[Workload]:
    def measure(
        run: Callable[[big_db.BigServer], tuple[float, dict[str, float]]],
    ) -> Callable[[System, Context], Measurement]:
        def measured(system: System, context: Context) -> Measurement:
            return Measurement(*run(context.big[system.key]))

        return measured

    objects = f"{settings.objects:,} objects"
    return [
        Workload(
            "big_start_index",
            f"server start on {objects}, with its index: until a client loaded",
            "s",
            "lower",
            measure(lambda server: big_db.start(server, index=True)),
            floor=False,
            big=True,
        ),
        Workload(
            "big_start_noindex",
            f"server start on {objects}, index file removed",
            "s",
            "lower",
            measure(lambda server: big_db.start(server, index=False)),
            floor=False,
            big=True,
        ),
        Workload(
            "big_reconnect_short",
            f"client with {settings.cached:,} cached objects back after "
            f"{settings.short} commits (inside the invalidation queue): "
            "until its first load",
            "s",
            "lower",
            measure(lambda server: big_db.reconnect(server, settings, settings.short)),
            floor=False,
            big=True,
        ),
        Workload(
            "big_reconnect_long",
            f"the same after {settings.long} commits (past the queue)",
            "s",
            "lower",
            measure(lambda server: big_db.reconnect(server, settings, settings.long)),
            floor=False,
            big=True,
        ),
        Workload(
            "big_pack",
            f"pack of {objects} while a client commits",
            "s",
            "lower",
            measure(lambda server: big_db.pack(server, settings)),
            floor=False,
            big=True,
        ),
    ]


def make_settings(args: argparse.Namespace) -> Settings:
    if args.quick:
        return Settings(
            fanout=(0, 4),
            readers=(2,),
            pool=200,
            commit_seconds=args.commit_seconds or 0.5,
            delay_commits=20,
        )
    return Settings(
        fanout=(0, 64, 256),
        readers=(4, 8, 16, 64),
        pool=20_000,
        commit_seconds=args.commit_seconds or 3.0,
        delay_commits=300,
    )


def all_workloads(settings: Settings) -> list[Workload]:
    workloads = [
        Workload(
            f"fanout_{clients}",
            f"one-object commits, {clients} idle clients connected",
            "commits/s",
            "higher",
            fanout(clients),
            "fanout",
            clients,
        )
        for clients in settings.fanout
    ]
    workloads += [
        Workload(
            f"ceiling_{readers}",
            f"{readers} cold readers, loadBefore one oid at a time",
            "loads/s",
            "higher",
            ceiling(readers),
            "ceiling",
            readers,
        )
        for readers in settings.readers
    ]
    workloads += [
        Workload(
            f"delay_{state}",
            f"invalidation delay, receiving client {state}",
            "ms p99",
            "lower",
            delay(state == "busy"),
            floor=False,
        )
        for state in ("idle", "busy")
    ]
    return workloads


# -- the workloads -----------------------------------------------------------


def _worker(
    context: Context, system: System, mode: str, index: int, extra: str = ""
) -> Child:
    argv = [
        sys.executable,
        "-m",
        "bench.worker",
        mode,
        system.client,
        json.dumps(system.target),
        str(index),
    ]
    if extra:
        argv.append(extra)
    name = system.unique(mode)
    return context.children.start(argv, name, env=system.state.get("env"))


def _percentiles_ms(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    if not ordered:
        return {}
    return {
        "p50_ms": ordered[len(ordered) // 2] * 1e3,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
    }


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def fanout(clients: int) -> Callable[[System, Context], Measurement]:
    def measure(system: System, context: Context) -> Measurement:
        assert system.server_pid is not None
        listeners = []
        try:
            for first in range(0, clients, LISTENERS_PER_PROCESS):
                count = min(LISTENERS_PER_PROCESS, clients - first)
                listeners.append(_worker(context, system, "listen", 0, str(count)))
            for listener in listeners:
                listener.expect("READY", START_TIMEOUT + clients)
            committer = _worker(context, system, "commit", 0)
            try:
                committer.expect("READY", START_TIMEOUT)
                pids = [listener.pid for listener in listeners]
                before = (
                    cpu_seconds(system.server_pid),
                    cpu_seconds(committer.pid),
                    _cpu(pids),
                )
                started = time.perf_counter()
                committer.send(f"GO {context.settings.commit_seconds}")
                result = json.loads(
                    committer.expect(
                        "RESULT", context.settings.commit_seconds + START_TIMEOUT
                    )
                )
                for listener in listeners:
                    listener.send(f"WAIT {result['last_tid']} {CATCH_UP_TIMEOUT}")
                for listener in listeners:
                    listener.expect("CAUGHT", CATCH_UP_TIMEOUT + 10)
                caught_up = time.perf_counter() - started
                server = cpu_seconds(system.server_pid) - before[0]
                committing = cpu_seconds(committer.pid) - before[1]
                listening = _cpu(pids) - before[2]
            finally:
                context.children.reap(committer)
        finally:
            for listener in listeners:
                context.children.reap(listener)
        latencies = result["latencies"]
        commits = len(latencies)
        extras = {
            **_percentiles_ms(latencies),
            "operations": commits,
            "server_cpu_per_commit_us": server / commits * 1e6,
            "committer_cpu_per_commit_us": committing / commits * 1e6,
            "caught_up_s": caught_up,
        }
        if clients:
            extras["listener_cpu_per_commit_ms"] = listening / commits * 1e3
            extras["listener_cpu_per_invalidation_us"] = (
                listening / (commits * clients) * 1e6
            )
        return Measurement(commits / context.settings.commit_seconds, extras)

    return measure


def ceiling(readers: int) -> Callable[[System, Context], Measurement]:
    def measure(system: System, context: Context) -> Measurement:
        assert system.server_pid is not None
        share = len(context.oids) // readers
        workers = []
        try:
            for index in range(readers):
                path = os.path.join(context.temp, f"{system.unique('oids')}.json")
                chunk = context.oids[index * share : (index + 1) * share]
                with open(path, "w") as file:
                    json.dump([oid.hex() for oid in chunk], file)
                workers.append(_worker(context, system, "read", index, path))
            for worker in workers:
                worker.expect("READY", START_TIMEOUT + readers)
            pids = [worker.pid for worker in workers]
            before = cpu_seconds(system.server_pid), _cpu(pids)
            for worker in workers:
                worker.send("GO")
            results = [
                json.loads(worker.expect("RESULT", START_TIMEOUT * 2))
                for worker in workers
            ]
            server = cpu_seconds(system.server_pid) - before[0]
            reading = _cpu(pids) - before[1]
        finally:
            for worker in workers:
                context.children.reap(worker)
        latencies = [value for result in results for value in result["latencies"]]
        span = max(r["end"] for r in results) - min(r["start"] for r in results)
        loads = len(latencies)
        per_load = server / loads
        return Measurement(
            loads / span,
            {
                **_percentiles_ms(latencies),
                "operations": loads,
                "server_cpu_per_load_us": per_load * 1e6,
                "reader_cpu_per_load_us": reading / loads * 1e6,
                "server_core_share": server / span,
                "ceiling_loads_per_s": 1 / per_load,
            },
        )

    return measure


def delay(busy: bool) -> Callable[[System, Context], Measurement]:
    def measure(system: System, context: Context) -> Measurement:
        watcher = _worker(context, system, "watch", 0, "busy" if busy else "idle")
        try:
            watcher.expect("READY", START_TIMEOUT)
            storage = system.open()
            db = ZODB.DB(storage)
            try:
                manager = transaction.TransactionManager()
                conn = db.open(transaction_manager=manager)
                counter = conn.root()["counters"][0]
                began, returned = {}, {}
                for _ in range(context.settings.delay_commits):
                    start = time.perf_counter()
                    counter["n"] += 1
                    manager.commit()
                    tid = counter._p_serial.hex()
                    returned[tid] = time.perf_counter()
                    began[tid] = start
                    time.sleep(DELAY_INTERVAL)
                last = counter._p_serial.hex()
                conn.close()
            finally:
                db.close()
            watcher.send(f"DONE {last}")
            seen = json.loads(watcher.expect("RESULT", START_TIMEOUT))
        finally:
            context.children.reap(watcher)
        missing = sorted(set(returned) - set(seen))
        if missing:
            raise RuntimeError(f"{len(missing)} invalidation(s) never arrived")
        visible = sorted(seen[tid] - moment for tid, moment in began.items())
        after = _percentiles_ms([seen[tid] - at for tid, at in returned.items()])
        p = _percentiles_ms(visible)
        return Measurement(
            p["p99_ms"],
            {
                **p,
                "max_ms": visible[-1] * 1e3,
                "after_return_p50_ms": after["p50_ms"],
                "after_return_p99_ms": after["p99_ms"],
                "operations": len(visible),
            },
        )

    return measure


# -- the run -----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaling",
        description="How the cost grows with clients and load: ZEO 6 against ours.",
    )
    parser.add_argument("--runs", type=int, default=None, help="runs (default 3)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke mode: a few clients, one run"
    )
    parser.add_argument("--only", default=None, help="comma-separated workloads")
    parser.add_argument(
        "--output", default=DEFAULT_OUTPUT, help="directory for the result files"
    )
    parser.add_argument(
        "--commit-seconds",
        type=float,
        default=None,
        help="length of each fanout measurement (default 3)",
    )
    parser.add_argument(
        "--compare-src",
        default=None,
        metavar="DIR",
        help="also measure the zodbserver whose source directory is DIR (the "
        "src of another checkout) as the system ours-old, in the workloads "
        "that run every client in a child process (fanout, ceiling)",
    )
    parser.add_argument(
        "--big",
        action="store_true",
        help="also the big-database workloads (1,000,000 objects; with "
        "--quick a few thousand), each measured once per system",
    )
    parser.add_argument(
        "--list", action="store_true", help="list the workloads and exit"
    )
    return parser


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    settings = make_settings(args)
    big_settings = big_db.QUICK if args.quick else big_db.FULL
    workloads = all_workloads(settings)
    if args.big or args.list:
        workloads += big_workloads(big_settings)
    if args.list:
        for workload in workloads:
            print(f"{workload.name:14} {workload.description}")
        return 0
    wanted = {name.strip() for name in (args.only or "").split(",") if name.strip()}
    unknown = wanted - {w.name for w in workloads}
    if unknown:
        raise SystemExit(f"unknown workload(s): {', '.join(sorted(unknown))}")
    if wanted:
        workloads = [w for w in workloads if w.name in wanted]
    runs = args.runs or (1 if args.quick else 3)
    signal.signal(signal.SIGTERM, _terminate)
    os.makedirs(args.output, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zodbserver-scaling-") as temp:
        children = Children(temp)
        try:
            big = big_settings if args.big else None
            results = _run(
                settings, big, workloads, runs, temp, children, args.compare_src
            )
        finally:
            children.close()
    results["command"] = shlex.join(["python", "-m", "bench.scaling", *argv])
    results["elapsed_s"] = time.perf_counter() - started
    results["machine"]["load_average_at_end"] = os.getloadavg()
    from . import scaling_report

    written = scaling_report.write(args.output, results)
    print(f"wrote {', '.join(written)}", file=sys.stderr)
    failed = [
        (w["name"], key)
        for w in results["workloads"]
        for key, entry in w["results"].items()
        if entry["median"] is None
    ]
    if failed:
        print(f"failed measurements: {failed}", file=sys.stderr)
    return 1 if failed else 0


def _run(
    settings: Settings,
    big: big_db.BigSettings | None,
    workloads: list[Workload],
    runs: int,
    temp: str,
    children: Children,
    compare_src: str | None = None,
) -> dict[str, Any]:
    machine = report.machine()
    _compile_bytecode()
    _log("building the seed database")
    seed = build_seed(
        os.path.join(temp, "seed"),
        count=settings.pool,
        restart_count=0,
        workers=1,
        blob_sizes=(),
    )
    oids = _object_oids(seed.path, seed.blob_dir)
    systems = []
    matrix: list[tuple[str, str, str, str]] = list(SYSTEMS)
    old_env = None
    if compare_src:
        source = os.path.abspath(compare_src)
        old_env = {**os.environ, "PYTHONPATH": source}
        matrix.insert(2, (OLD, OURS, "ours", f"zodbserver at {_revision(source)}"))
    for key, client, server, label in matrix:
        _log(f"starting the {server} server")
        env = old_env if key == OLD else None
        if server == ECHO:
            child = children.start([sys.executable, "-m", "bench.echo"], "echo")
            address = ("127.0.0.1", int(child.expect("READY", START_TIMEOUT)))
        else:
            path, blob_dir = copy_seed(seed, os.path.join(temp, f"{key}-server"))
            child, address = start_server(
                children, server, path, blob_dir, temp, name=key, env=env
            )
        work_dir = os.path.join(temp, "clients", key)
        os.makedirs(work_dir)
        system = System(key, client, server, label, address, child.pid, work_dir)
        if env is not None:
            system.state["env"] = env
        systems.append(system)
    context = Context(settings, oids, children, temp)
    if big is not None:
        _log(f"building the big database ({big.objects:,} objects)")
        began = time.perf_counter()
        path = big_db.build(os.path.join(temp, "big-seed"), big)
        _log(
            f"built {os.path.getsize(path) / 2**30:.2f} GiB in "
            f"{time.perf_counter() - began:.0f} s"
        )
        for system in systems:
            if system.key not in (FLOOR, OLD):
                work = os.path.join(temp, f"big-{system.key}")
                context.big[system.key] = big_db.BigServer(
                    children,
                    system.server or "",
                    system.client,
                    big_db.copy(path, work),
                    work,
                )
    measured_workloads = []
    for workload in workloads:
        chosen = [
            s
            for s in systems
            if (workload.floor or s.key != FLOOR)
            and (workload.curve is not None or s.key != OLD)
        ]
        measured: dict[str, list[dict[str, Any]]] = {s.key: [] for s in chosen}
        for run in range(1 if workload.big else runs):
            for system in chosen:
                measured[system.key].append(_measure(workload, system, context, run))
        measured_workloads.append(
            {
                "name": workload.name,
                "description": workload.description,
                "unit": workload.unit,
                "better": workload.better,
                "curve": workload.curve,
                "x": workload.x,
                "results": report.summarize(measured, BASELINE),
            }
        )
    return {
        "baseline": BASELINE,
        "systems": [
            {"key": s.key, "label": s.label, "client": s.client, "server": s.server}
            for s in systems
        ],
        "options": {
            "runs": runs,
            "fanout": settings.fanout,
            "readers": settings.readers,
            "pool": settings.pool,
            "commit_seconds": settings.commit_seconds,
            "delay_commits": settings.delay_commits,
            "listeners_per_process": LISTENERS_PER_PROCESS,
            "big": None if big is None else big.__dict__,
        },
        "machine": machine,
        "workloads": measured_workloads,
    }


def _revision(source: str) -> str:
    """The commit checked out at ``source``, or ``source`` itself."""
    try:
        done = subprocess.run(
            ["git", "-C", source, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return source
    return done.stdout.strip() if done.returncode == 0 else source


def _measure(
    workload: Workload, system: System, context: Context, run: int
) -> dict[str, Any]:
    try:
        measurement = workload.measure(system, context)
    except Exception as error:
        traceback.print_exc()
        _log(f"{workload.name} run {run + 1} {system.key}: FAILED {error!r}")
        return {"value": None, "extras": {}, "error": repr(error)}
    extras = {k: round(v, 4) for k, v in measurement.extras.items()}
    value = measurement.value
    _log(f"{workload.name} run {run + 1} {system.key}: {value:.4g} {extras}")
    return {"value": measurement.value, "extras": measurement.extras}


def _log(message: str) -> None:
    print(f"[scaling] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
