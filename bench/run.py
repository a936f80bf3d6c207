"""``python -m bench``: the benchmark matrix, run once on fresh data.

One run: build a seed database in a temporary directory; copy it for ZEO's
server, for ours (both child processes) and for the in-process FileStorage;
then, workload by workload, measure every system in turn (A B C D E, A B C
D E, ...) ``--runs`` times; take medians, divide by the ZEO × ZEO median,
and write ``results.json`` and ``RESULTS.md`` into ``--output``.  Every
child process is killed at the end, also on failure or Ctrl-C.

``--monitor`` measures what our server's monitor costs: a third server
(ours, with ``monitor-address``) on its own copy of the seed, scraped by a
``bench.scraper`` child as each of its measurements begins and every
``SCRAPE_INTERVAL`` until it ends, and a twin of each selected system of
our server against it.  It runs
``MONITOR_WORKLOADS`` and ``MONITOR_SYSTEMS`` (and their twins) unless
``--only`` and ``--systems`` name more; rounds alternate in direction
(A B, B A, ...) so that neither twin always goes first.
"""

from __future__ import annotations

import argparse
import compileall
import logging
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from . import report
from .clients import TLS_ENVIRONMENT, make_certificates
from .data import build_seed, copy_seed
from .processes import Children, Scraper, cpu_seconds, free_port, start_server
from .systems import BASELINE, MATRIX, MONITORED, MONITORED_LABEL, System
from .workloads import MB, Context, Settings, Workload, all_workloads

DEFAULT_OUTPUT = str(Path(__file__).resolve().parent / "results")
COMMIT_WORKERS = 16
#: ``--monitor`` without ``--only``/``--systems``: the workloads and the
#: systems (each with its monitored twin) it runs.
MONITOR_WORKLOADS = ("commits_1", "load_before")
MONITOR_SYSTEMS = ("ours-ours",)
#: Seconds between two scrapes of the monitor (Prometheus's default: 15).
SCRAPE_INTERVAL = 1.0
#: ``--objects`` of ``--monitor``: load_before then lasts about two
#: seconds, long enough for scrapes every ``SCRAPE_INTERVAL`` to fall
#: among its calls.
MONITOR_OBJECTS = 10_000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark zodbserver's client and server against ZEO 6's.",
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per system (default 5)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke mode: few objects, one run, no 16-process or 100 MB workloads",
    )
    parser.add_argument(
        "--only", default=None, help="comma-separated workload names to run"
    )
    parser.add_argument(
        "--output", default=DEFAULT_OUTPUT, help="directory for the result files"
    )
    parser.add_argument(
        "--objects",
        type=int,
        default=None,
        help=f"objects per read/write (1000; with --monitor {MONITOR_OBJECTS:,})",
    )
    parser.add_argument(
        "--big-blobs", action="store_true", help="also run the 100 MB blob workloads"
    )
    parser.add_argument(
        "--commit-seconds",
        type=float,
        default=None,
        help="how long each commits_N measurement lasts (default 3)",
    )
    parser.add_argument(
        "--wire",
        choices=("default", "M5", "Z5"),
        default="default",
        help="encoding both servers announce: each one's default (ZEO Z5, ours "
        "M5), msgpack (M5) or pickle (Z5)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="both servers over TLS (mutual, the same certificates), every "
        "client with a client certificate",
    )
    parser.add_argument(
        "--systems",
        default=None,
        help="comma-separated system keys to run, of "
        + ", ".join(key for key, *_ in MATRIX)
        + " (default: all; with --monitor, "
        + ", ".join(MONITOR_SYSTEMS)
        + " and those named here)",
    )
    parser.add_argument(
        "--monitor",
        action="store_true",
        help="add a twin of each system of our server whose server has a "
        "monitor, scraped every --scrape-interval; run "
        + " and ".join(MONITOR_WORKLOADS)
        + " (and --only's workloads)",
    )
    parser.add_argument(
        "--scrape-interval",
        type=float,
        default=SCRAPE_INTERVAL,
        help=f"seconds between two scrapes of the monitor (default "
        f"{SCRAPE_INTERVAL:g}; Prometheus's is 15)",
    )
    parser.add_argument(
        "--list", action="store_true", help="list the workloads and exit"
    )
    return parser


def make_settings(args: argparse.Namespace) -> Settings:
    if args.quick:
        return Settings(
            count=args.objects or 100,
            restart_count=500,
            transactions={1: 5, 10: 5, 100: 3},
            commit_duration=args.commit_seconds or 0.5,
            rss_clients=2,
        )
    return Settings(
        count=args.objects or (MONITOR_OBJECTS if args.monitor else 1000),
        restart_count=10_000,
        transactions={1: 50, 10: 20, 100: 10},
        commit_duration=args.commit_seconds or 3.0,
        rss_clients=16,
    )


def choose(
    workloads: list[Workload], args: argparse.Namespace
) -> tuple[list[Workload], list[str]]:
    names = [w.name for w in workloads]
    wanted = _names(args.only)
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise SystemExit(f"unknown workload(s): {', '.join(unknown)}")
    if args.monitor:
        wanted = [*MONITOR_WORKLOADS, *wanted]
    chosen: list[Workload] = []
    skipped: list[Workload] = []
    for workload in workloads:
        run = not wanted or workload.name in wanted
        if not wanted:
            if args.quick and not workload.quick:
                run = False
            if workload.big and not args.big_blobs:
                run = False
        (chosen if run else skipped).append(workload)
    return chosen, [w.name for w in skipped]


def choose_systems(args: argparse.Namespace) -> list[str]:
    """The keys of the selected systems, in the matrix's order (twins are
    added when the systems start)."""
    keys = [key for key, *_ in MATRIX]
    wanted = _names(args.systems)
    unknown = sorted(set(wanted) - set(keys))
    if unknown:
        raise SystemExit(
            f"unknown system(s): {', '.join(unknown)} (known: {', '.join(keys)})"
        )
    if args.monitor:
        wanted = [*MONITOR_SYSTEMS, *wanted]
    return [key for key in keys if not wanted or key in wanted]


def _names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command = shlex.join(["python", "-m", "bench", *argv])
    settings = make_settings(args)
    workloads, skipped = choose(all_workloads(settings), args)
    system_keys = choose_systems(args)
    if args.list:
        for workload in all_workloads(settings):
            print(f"{workload.name:18} {workload.description}")
        return 0
    runs = args.runs or (1 if args.quick else 5)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    signal.signal(signal.SIGTERM, _terminate)
    os.makedirs(args.output, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zodbserver-bench-") as temp:
        children = Children(temp)
        try:
            results = _run(args, settings, workloads, system_keys, runs, temp, children)
        finally:
            children.close()
    results["skipped"] = skipped
    results["elapsed_s"] = time.perf_counter() - started
    results["machine"]["load_average_at_end"] = os.getloadavg()
    json_path = os.path.join(args.output, "results.json")
    markdown_path = os.path.join(args.output, "RESULTS.md")
    report.write_json(json_path, results)
    with open(markdown_path, "w") as file:
        file.write(report.markdown(results, args.output))
    print(f"wrote {json_path} and {markdown_path}", file=sys.stderr)
    failed = [
        (w["name"], key)
        for w in results["workloads"]
        for key, entry in w["results"].items()
        if entry["median"] is None
    ]
    if failed:
        print(f"failed measurements: {failed}", file=sys.stderr)
    monitor = results.get("monitor")
    if monitor and monitor["failed"]:
        print(f"failed scrapes: {monitor['failed']}", file=sys.stderr)
    return 1 if failed or (monitor and monitor["failed"]) else 0


def _compile_bytecode() -> None:
    """Compile both stacks' modules ahead, as an installed package has them.

    ZEO comes from site-packages with its bytecode; ours may be an editable
    checkout, which an environment with ``PYTHONDONTWRITEBYTECODE`` would
    make every process compile from source at start, costing it time and
    resident memory that an installed server does not pay.
    """
    import ZEO

    import zodbserver

    for package in (zodbserver, ZEO):
        compileall.compile_dir(os.path.dirname(package.__file__), quiet=1)


def _run(
    args: argparse.Namespace,
    settings: Settings,
    workloads: list[Workload],
    system_keys: list[str],
    runs: int,
    temp: str,
    children: Children,
) -> dict[str, Any]:
    machine = report.machine()
    _compile_bytecode()
    blob_sizes = [MB] + ([100 * MB] if any(w.big for w in workloads) else [])
    _log("building the seed database")
    seed = build_seed(
        os.path.join(temp, "seed"),
        count=settings.count,
        restart_count=settings.restart_count,
        workers=COMMIT_WORKERS,
        blob_sizes=tuple(blob_sizes),
    )
    oids = _object_oids(seed.path, seed.blob_dir)
    msgpack = {"default": None, "M5": True, "Z5": False}[args.wire]
    tls = None
    if args.tls:
        tls = make_certificates(os.path.join(temp, "certificates"))
        os.environ[TLS_ENVIRONMENT] = tls  # the clients, workers included
    systems, scraper = _start_systems(
        seed,
        temp,
        children,
        msgpack,
        tls,
        system_keys,
        args.monitor,
        args.scrape_interval,
    )
    baseline = BASELINE if BASELINE in system_keys else systems[0].key
    context = Context(settings, seed, oids, children)
    encodings = _encodings(systems)
    pairs = {s.key: s.monitor_of for s in systems if s.monitor_of is not None}
    results_by_workload = []
    for workload in workloads:
        measured: dict[str, list[dict[str, Any]]] = {s.key: [] for s in systems}
        for run in range(runs):
            order = systems[::-1] if args.monitor and run % 2 else systems
            for system in order:
                measured[system.key].append(
                    _measure(workload, system, context, run, args.monitor)
                )
        summary = report.summarize(measured, baseline)
        report.add_monitor_ratios(summary, pairs)
        for key in pairs:
            scrapes = [n for n in summary[key].get("scrapes", []) if n is not None]
            _log(f"{workload.name} {key}: {sum(scrapes)} scrapes in {runs} runs")
        results_by_workload.append(
            {
                "name": workload.name,
                "description": workload.description,
                "unit": workload.unit,
                "better": workload.better,
                "results": summary,
            }
        )
    return {
        "command": args.command,
        "baseline": baseline,
        "systems": [
            {
                "key": s.key,
                "label": s.label,
                "client": s.client,
                "server": s.server,
                "monitor_of": s.monitor_of,
            }
            for s in systems
        ],
        "options": {
            "runs": runs,
            "quick": args.quick,
            "objects": settings.count,
            "restart_objects": settings.restart_count,
            "transactions": settings.transactions,
            "commit_seconds": settings.commit_duration,
            "rss_clients": settings.rss_clients,
            "wire": args.wire,
            "tls": args.tls,
            "monitor": args.monitor,
            "payload_bytes": "~570 per record",
        },
        "monitor": _scrape_summary(scraper) if scraper is not None else None,
        "encodings": encodings,
        "machine": machine,
        "workloads": results_by_workload,
    }


class ScrapeFailedError(RuntimeError):
    """A scrape of the monitor failed around a measurement."""


def _measure(
    workload: Workload,
    system: System,
    context: Context,
    run: int,
    server_cpu: bool = False,
) -> dict[str, Any]:
    """One measurement; with ``server_cpu``, also the CPU time the server
    spent in it (``server_cpu_s``) and per operation where the workload
    counts them (``server_cpu_per_op``, else the same as ``server_cpu_s``)."""
    scraper = system.scraper
    pid = system.server_pid if server_cpu else None
    during = None
    try:
        cpu = cpu_seconds(pid) if pid is not None else 0.0
        start = time.monotonic()
        if scraper is not None:
            # The first scrape begins within the measurement, the next ones
            # every interval after it, until the measurement ends.
            scraper.begin()
        try:
            measurement = workload.measure(system, context)
        finally:
            end = time.monotonic()
            scrapes = scraper.end() if scraper is not None else []
        if pid is not None:
            cpu = cpu_seconds(pid) - cpu
        if scraper is not None:
            _check_scrapes(scrapes, "during the measurement")
            during = sum(
                1 for s in scrapes if s["at"] < end and s["at"] + s["seconds"] > start
            )
    except Exception as error:
        traceback.print_exc()
        _log(f"{workload.name} run {run + 1} {system.key}: FAILED {error!r}")
        return {"value": None, "extras": {}, "error": repr(error)}
    scraped = "" if during is None else f" ({during} scrapes)"
    _log(
        f"{workload.name} run {run + 1} {system.key}: {measurement.value:.4g} "
        f"{ {k: round(v, 4) for k, v in measurement.extras.items()} or '' }{scraped}"
    )
    result: dict[str, Any] = {"value": measurement.value, "extras": measurement.extras}
    if during is not None:
        result["scrapes"] = during
        result["measured_s"] = end - start
    if pid is not None:
        result["server_cpu_s"] = cpu
        operations = measurement.extras.get("operations")
        result["server_cpu_per_op"] = cpu / operations if operations else cpu
    return result


def _check_scrapes(scrapes: list[dict[str, Any]], when: str) -> None:
    failed = [s for s in scrapes if s["error"]]
    if failed:
        raise ScrapeFailedError(
            f"{len(failed)} scrape(s) failed {when}: {failed[0]['error']}"
        )


def _scrape_summary(scraper: Scraper) -> dict[str, Any]:
    """Every scrape of the run: how many, how many failed, how long each took
    and how much it fetched."""
    scraper.sync()
    scrapes = scraper.scrapes
    good = [s for s in scrapes if not s["error"]]

    def median(key: str) -> float | None:
        values = [s[key] for s in good]
        return statistics.median(values) if values else None

    def highest(key: str) -> float | None:
        return max((s[key] for s in good), default=None)

    return {
        "url": scraper.base_url,
        "interval_s": scraper.interval,
        "paths": ["/metrics", "/status.json"],
        "scrapes": len(scrapes),
        "failed": len(scrapes) - len(good),
        "errors": sorted({s["error"] for s in scrapes if s["error"]})[:10],
        "metrics_ms_p50": median("metrics_ms"),
        "metrics_ms_max": highest("metrics_ms"),
        "status_ms_p50": median("status_ms"),
        "status_ms_max": highest("status_ms"),
        "metrics_bytes": median("metrics_bytes"),
        "status_bytes": median("status_bytes"),
    }


def _object_oids(path: str, blob_dir: str) -> list[bytes]:
    import ZODB
    from ZODB.FileStorage import FileStorage

    db = ZODB.DB(FileStorage(path, blob_dir=blob_dir, read_only=True))
    try:
        conn = db.open()
        return [item._p_oid for item in conn.root()["objects"].values()]
    finally:
        db.close()


def _start_systems(
    seed: Any,
    temp: str,
    children: Children,
    msgpack: bool | None,
    tls: str | None,
    keys: list[str],
    monitor: bool,
    interval: float,
) -> tuple[list[System], Scraper | None]:
    """Start the servers the selected systems need (each on its own copy of
    the seed) and, with ``monitor``, our monitored server and its scraper;
    the systems in running order, each twin right after its system."""
    matrix = [row for row in MATRIX if row[0] in keys]
    servers = {}
    for kind in ("zeo", "ours"):
        if not any(server == kind for _, _, server, _ in matrix):
            continue
        path, blob_dir = copy_seed(seed, os.path.join(temp, f"{kind}-server"))
        _log(f"starting the {kind} server")
        child, address = start_server(
            children, kind, path, blob_dir, temp, msgpack, tls
        )
        servers[kind] = (child.pid, address)
    scraper = None
    if monitor:
        path, blob_dir = copy_seed(seed, os.path.join(temp, "ours-monitor-server"))
        monitor_port = free_port()
        _log(f"starting the ours server with a monitor on port {monitor_port}")
        child, address = start_server(
            children,
            "ours",
            path,
            blob_dir,
            temp,
            msgpack,
            tls,
            monitor_port=monitor_port,
            name="ours-monitor-server",
        )
        monitored = (child.pid, address)
        scraper = Scraper(children, f"http://127.0.0.1:{monitor_port}", interval)
    floor = None
    if any(server is None for _, _, server, _ in matrix):
        floor = copy_seed(seed, os.path.join(temp, "filestorage"))
    systems = []
    for key, client, server, label in matrix:
        work_dir = os.path.join(temp, "clients", key)
        os.makedirs(work_dir)
        if server is None:
            systems.append(System(key, client, None, label, floor, None, work_dir))
            continue
        pid, address = servers[server]
        systems.append(System(key, client, server, label, address, pid, work_dir))
        if scraper is not None and server == "ours":
            twin = MONITORED.format(key)
            work_dir = os.path.join(temp, "clients", twin)
            os.makedirs(work_dir)
            pid, address = monitored
            systems.append(
                System(
                    twin,
                    client,
                    server,
                    MONITORED_LABEL.format(label),
                    address,
                    pid,
                    work_dir,
                    scraper=scraper,
                    monitor_of=key,
                )
            )
    return systems, scraper


def _encodings(systems: list[System]) -> dict[str, str]:
    found = {}
    for system in systems:
        if system.server is None:
            continue
        storage = system.open()
        try:
            version = getattr(storage, "protocol_version", None) or b"?"
            found[system.key] = version.decode()
        finally:
            storage.close()
    return found


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)
