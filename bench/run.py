"""``python -m bench``: the benchmark matrix, run once on fresh data.

One run: build a seed database in a temporary directory; copy it for ZEO's
server, for ours (both child processes) and for the in-process FileStorage;
then, workload by workload, measure every system in turn (A B C D E, A B C
D E, ...) ``--runs`` times; take medians, divide by the ZEO × ZEO median,
and write ``results.json`` and ``RESULTS.md`` into ``--output``.  Every
child process is killed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import compileall
import logging
import os
import shlex
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from . import report
from .clients import TLS_ENVIRONMENT, make_certificates
from .data import build_seed, copy_seed
from .processes import Children, start_server
from .systems import BASELINE, MATRIX, System
from .workloads import MB, Context, Settings, Workload, all_workloads

DEFAULT_OUTPUT = str(Path(__file__).resolve().parent / "results")
COMMIT_WORKERS = 16


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
        "--objects", type=int, default=None, help="objects per read/write (1000)"
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
        count=args.objects or 1000,
        restart_count=10_000,
        transactions={1: 50, 10: 20, 100: 10},
        commit_duration=args.commit_seconds or 3.0,
        rss_clients=16,
    )


def choose(
    workloads: list[Workload], args: argparse.Namespace
) -> tuple[list[Workload], list[str]]:
    names = [w.name for w in workloads]
    if args.only:
        wanted = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise SystemExit(f"unknown workload(s): {', '.join(unknown)}")
    chosen, skipped = [], []
    for workload in workloads:
        run = not args.only or workload.name in wanted
        if not args.only:
            if args.quick and not workload.quick:
                run = False
            if workload.big and not args.big_blobs:
                run = False
        (chosen if run else skipped).append(workload)
    return chosen, [w.name for w in skipped]


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command = shlex.join(["python", "-m", "bench", *argv])
    settings = make_settings(args)
    workloads, skipped = choose(all_workloads(settings), args)
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
            results = _run(args, settings, workloads, runs, temp, children)
        finally:
            children.close()
    results["skipped"] = skipped
    results["elapsed_s"] = time.perf_counter() - started
    results["machine"]["load_average_at_end"] = os.getloadavg()
    json_path = os.path.join(args.output, "results.json")
    markdown_path = os.path.join(args.output, "RESULTS.md")
    report.write_json(json_path, results)
    with open(markdown_path, "w") as file:
        file.write(report.markdown(results))
    print(f"wrote {json_path} and {markdown_path}", file=sys.stderr)
    failed = [
        (w["name"], key)
        for w in results["workloads"]
        for key, entry in w["results"].items()
        if entry["median"] is None
    ]
    if failed:
        print(f"failed measurements: {failed}", file=sys.stderr)
        return 1
    return 0


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
    systems = _start_systems(seed, temp, children, msgpack, tls)
    context = Context(settings, seed, oids, children)
    encodings = _encodings(systems)
    results_by_workload = []
    for workload in workloads:
        measured: dict[str, list[dict[str, Any]]] = {s.key: [] for s in systems}
        for run in range(runs):
            for system in systems:
                measured[system.key].append(_measure(workload, system, context, run))
        summary = report.summarize(measured, BASELINE)
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
        "baseline": BASELINE,
        "systems": [
            {"key": s.key, "label": s.label, "client": s.client, "server": s.server}
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
            "payload_bytes": "~570 per record",
        },
        "encodings": encodings,
        "machine": machine,
        "workloads": results_by_workload,
    }


def _measure(
    workload: Workload, system: System, context: Context, run: int
) -> dict[str, Any]:
    try:
        measurement = workload.measure(system, context)
    except Exception as error:
        traceback.print_exc()
        _log(f"{workload.name} run {run + 1} {system.key}: FAILED {error!r}")
        return {"value": None, "extras": {}, "error": repr(error)}
    _log(
        f"{workload.name} run {run + 1} {system.key}: {measurement.value:.4g} "
        f"{ {k: round(v, 4) for k, v in measurement.extras.items()} or '' }"
    )
    return {"value": measurement.value, "extras": measurement.extras}


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
    seed: Any, temp: str, children: Children, msgpack: bool | None, tls: str | None
) -> list[System]:
    servers = {}
    for kind in ("zeo", "ours"):
        path, blob_dir = copy_seed(seed, os.path.join(temp, f"{kind}-server"))
        _log(f"starting the {kind} server")
        child, address = start_server(
            children, kind, path, blob_dir, temp, msgpack, tls
        )
        servers[kind] = (child.pid, address)
    floor = copy_seed(seed, os.path.join(temp, "filestorage"))
    systems = []
    for key, client, server, label in MATRIX:
        work_dir = os.path.join(temp, "clients", key)
        os.makedirs(work_dir)
        if server is None:
            systems.append(System(key, client, None, label, floor, None, work_dir))
        else:
            pid, address = servers[server]
            systems.append(System(key, client, server, label, address, pid, work_dir))
    return systems


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
