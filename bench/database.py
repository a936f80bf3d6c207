"""RelStorage on PostgreSQL: application processes on it directly against
our client → our server → the same kind of database.

::

    .venv/bin/python -m bench.database [--runs 3] [--quick]
        [--output bench/results/database]

One PostgreSQL server, started by the benchmark (``tests/support``'s
``PostgresServer``: ``initdb`` into a temporary directory, a Unix socket,
``pg_stat_statements`` loaded), holds one fresh database per system, each
a copy (``copyTransactionsFrom``) of one seed FileStorage:

* ``relstorage`` (the baseline): each application process opens a
  RelStorage on the database (its blobs in the database too);
* ``ours``: each application process opens our ``ClientStorage`` to our
  server (``python -m zodbserver.cli -C zeo.conf fg``), whose
  ``<relstorage>`` section serves the database, blobs in the database.

The `ours` system runs two servers on its database, as two machines
would: the application processes use the first unless a workload says
otherwise.  Workloads:

* ``cold_read``: a new storage and ``ZODB.DB`` in this process (empty
  caches) reads the ``objects`` container: loads/s.  Our server's own
  RelStorage cache stays as earlier measurements left it, as a running
  server's does when an application process restarts.
* ``cold_read_new_server``: the same, our side through a server started
  for the read (its RelStorage cache empty too).
* ``commits_4``, ``commits_16``: ``python -m bench``'s, 4 and 16 worker
  processes (``bench/worker.py``) commit one small object each per
  transaction: commits/s, p50/p99.
* ``delay``: this process commits the counter ``delay_commits`` times, one
  every ``DELAY_SPACING`` s, while another application process begins a
  transaction every millisecond and reads it (``bench.worker see``): from
  the commit's return until the value is read, p50 (and p99).  On
  RelStorage the beginning transaction polls the database; on ours the
  reader is a client of the *second* server, so the delay includes that
  server's change feed (``database-poll-interval``, 0.1 s by default).
* ``idle_load``: 16 idle application processes connected for
  ``idle_seconds``, each beginning a transaction every second (a Zope
  worker's periodic task; ``bench.worker idle``), ours split between the
  two servers: the statements per second PostgreSQL ran for the database
  (``pg_stat_statements``), and its transactions per second
  (``pg_stat_database``'s ``xact_commit + xact_rollback``).  RelStorage
  polls at every transaction start; our servers poll (a look of the change
  feed per ``database-poll-interval``) and tell their clients.

Workload by workload, the systems run in turn ``--runs`` times, the order
reversed every other round (A B, B A, ...).  Each row gives the medians,
the ratio ``ours / relstorage`` of the medians and the paired ratio (each
round's ratio, the median of those).  Writes ``RESULTS.md`` and
``results.json`` into ``--output``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg2
import transaction
import ZODB
from ZODB.FileStorage import FileStorage

from bench import report
from bench.clients import OURS, RELSTORAGE, open_storage
from bench.data import Seed, build_seed
from bench.processes import START_TIMEOUT, Child, Children, start_server
from bench.run import _compile_bytecode
from bench.systems import System
from bench.workloads import Context, Measurement, Settings, _percentiles_ms, commits

ROOT = Path(__file__).resolve().parent.parent
# PostgreSQL and RelStorage as the tests run them, from tests/support (on
# sys.path as pytest has it: pythonpath = ["tests"]).
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from support.database import RelStorageServers  # noqa: E402
from support.postgres import PostgresServer  # noqa: E402

DEFAULT_OUTPUT = ROOT / "bench" / "results" / "database"
BASELINE = "relstorage"
#: (key, client kind, label); the first is the baseline.
SYSTEMS = (
    (BASELINE, RELSTORAGE, "RelStorage in each application process"),
    ("ours", OURS, "our client → our server → RelStorage"),
)
IDLE_PROCESSES = 16
#: Seconds between two transactions of an idle application process.
IDLE_PERIOD = 1.0
#: Seconds the idle processes run before the counting starts.
IDLE_SETTLE = 2.0
#: Seconds between two commits of ``delay`` (not a divisor of the change
#: feed's 0.1 s, so that commits fall at every phase of its looks).
DELAY_SPACING = 0.037
POSTGRES_SETTINGS = ("shared_preload_libraries=pg_stat_statements",)
#: Our servers' ``database-poll-interval``: its default, which they run with.
FEED_INTERVAL = 0.1
#: Packages named in the report beside ``bench.report.PACKAGES``
#: (psycopg2 is installed as either distribution).
PACKAGES = ("RelStorage", "psycopg2", "psycopg2-binary")


@dataclass(frozen=True)
class DatabaseSettings:
    runs: int
    objects: int
    commit_seconds: float
    delay_commits: int
    idle_seconds: float


FULL = DatabaseSettings(
    runs=3, objects=2000, commit_seconds=3.0, delay_commits=100, idle_seconds=20.0
)
QUICK = DatabaseSettings(
    runs=1, objects=200, commit_seconds=0.5, delay_commits=20, idle_seconds=3.0
)


@dataclass
class Bench:
    """What the workloads share: the settings, PostgreSQL, the children."""

    settings: DatabaseSettings
    postgres: PostgresServer
    children: Children
    work: Path
    context: Context


def _worker(
    bench: Bench, mode: str, kind: str, target: Any, index: int, extra: str = ""
) -> Child:
    argv = [
        sys.executable,
        "-m",
        "bench.worker",
        mode,
        kind,
        json.dumps(target),
        str(index),
        extra,
    ]
    return bench.children.start(argv, f"{kind}-{mode}-{index}")


def _database(system: System) -> RelStorageServers:
    servers: RelStorageServers = system.state["database"]
    return servers


def _server_target(system: System, server: int) -> Any:
    """Where an application process of ``system`` connects: the database
    itself, or our ``server``-th server on it."""
    if system.client == RELSTORAGE:
        return system.target
    return system.state["addresses"][server]


# -- the workloads -------------------------------------------------------------


def _read_objects(storage: Any) -> float:
    """Seconds a new ``ZODB.DB`` on ``storage`` takes to load every object."""
    db = ZODB.DB(storage, cache_size=50_000)
    try:
        conn = db.open(transaction_manager=transaction.TransactionManager())
        start = time.perf_counter()
        for item in conn.root()["objects"].values():
            item["payload"]
        elapsed = time.perf_counter() - start
        conn.close()
    finally:
        db.close()
    return elapsed


def cold_read(new_server: bool) -> Callable[[Bench, System], Measurement]:
    def measure(bench: Bench, system: System) -> Measurement:
        target = system.target
        server: Child | None = None
        if new_server and system.client == OURS:
            server, target = start_server(
                bench.children,
                "ours",
                "",
                "",
                str(bench.work),
                name=system.unique("read-server"),
                storage_section=_database(system).zeo_conf(system.unique("read")),
            )
        try:
            elapsed = _read_objects(open_storage(system.client, target))
        finally:
            if server is not None:
                bench.children.reap(server)
        return Measurement(bench.settings.objects / elapsed, {"ms": elapsed * 1e3})

    return measure


def concurrent_commits(clients: int) -> Callable[[Bench, System], Measurement]:
    measure_commits = commits(clients)

    def measure(bench: Bench, system: System) -> Measurement:
        return measure_commits(system, bench.context)

    return measure


def delay(bench: Bench, system: System) -> Measurement:
    reader = _worker(bench, "see", system.client, _server_target(system, 1), 0)
    try:
        reader.expect("READY", START_TIMEOUT)
        db = ZODB.DB(open_storage(system.client, system.target))
        try:
            manager = transaction.TransactionManager()
            conn = db.open(transaction_manager=manager)
            counter = conn.root()["counters"][0]
            first = counter["n"] + 1
            last = counter["n"] + bench.settings.delay_commits
            reader.send(f"UNTIL {last}")
            reader.expect("WATCHING", START_TIMEOUT)
            began, returned = {}, {}
            for _ in range(bench.settings.delay_commits):
                start = time.perf_counter()
                counter["n"] += 1
                manager.commit()
                returned[counter["n"]] = time.perf_counter()
                began[counter["n"]] = start
                time.sleep(DELAY_SPACING)
            conn.close()
        finally:
            db.close()
        seen = json.loads(reader.expect("RESULT", START_TIMEOUT + 60))
    finally:
        bench.children.reap(reader)
    missing = [n for n in range(first, last + 1) if str(n) not in seen]
    if missing:
        raise RuntimeError(f"{len(missing)} commit(s) never seen by the reader")
    after_return = _percentiles_ms([seen[str(n)] - at for n, at in returned.items()])
    after_start = _percentiles_ms([seen[str(n)] - at for n, at in began.items()])
    return Measurement(
        after_return["p50_ms"],
        {
            **after_return,
            "from_start_p50_ms": after_start["p50_ms"],
            "from_start_p99_ms": after_start["p99_ms"],
            "operations": len(returned),
        },
    )


def _database_counts(bench: Bench, database: str) -> tuple[int, int]:
    """PostgreSQL's statements (``pg_stat_statements``) and transactions
    (``pg_stat_database``) so far for ``database``."""
    connection = psycopg2.connect(bench.postgres.dsn("postgres"))
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s"
                " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s",
                (database,),
            )
            statements = int(cursor.fetchone()[0])
            cursor.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database"
                " WHERE datname = %s",
                (database,),
            )
            transactions = int(cursor.fetchone()[0])
    finally:
        connection.close()
    return statements, transactions


def idle_load(bench: Bench, system: System) -> Measurement:
    servers = len(system.state.get("addresses", [None]))
    workers = [
        _worker(
            bench,
            "idle",
            system.client,
            _server_target(system, index % servers),
            index,
            str(IDLE_PERIOD),
        )
        for index in range(IDLE_PROCESSES)
    ]
    try:
        for worker in workers:
            worker.expect("READY", START_TIMEOUT)
        time.sleep(IDLE_SETTLE)
        database = _database(system).database
        statements, transactions = _database_counts(bench, database)
        start = time.perf_counter()
        time.sleep(bench.settings.idle_seconds)
        statements_after, transactions_after = _database_counts(bench, database)
        elapsed = time.perf_counter() - start
        for worker in workers:
            if worker.process.poll() is not None:
                raise RuntimeError(f"{worker.name} exited: {worker.log_tail()}")
    finally:
        for worker in workers:
            bench.children.reap(worker)
    per_second = (statements_after - statements) / elapsed
    # What makes the load: a poll as each process begins a transaction, or
    # a look of each server's change feed.
    if system.client == RELSTORAGE:
        polls_per_second = IDLE_PROCESSES / IDLE_PERIOD
    else:
        polls_per_second = servers / FEED_INTERVAL
    return Measurement(
        per_second,
        {
            "transactions_per_s": (transactions_after - transactions) / elapsed,
            "statements_per_poll": per_second / polls_per_second,
        },
    )


@dataclass(frozen=True)
class DatabaseWorkload:
    name: str
    description: str
    unit: str
    better: str
    measure: Callable[[Bench, System], Measurement]


def all_workloads(settings: DatabaseSettings) -> list[DatabaseWorkload]:
    objects = settings.objects
    return [
        DatabaseWorkload(
            "cold_read",
            f"read {objects} objects, new application process caches",
            "loads/s",
            "higher",
            cold_read(new_server=False),
        ),
        DatabaseWorkload(
            "cold_read_new_server",
            f"read {objects} objects, caches empty (ours: a new server too)",
            "loads/s",
            "higher",
            cold_read(new_server=True),
        ),
        DatabaseWorkload(
            "commits_4",
            "one-object commits, 4 writer processes",
            "commits/s",
            "higher",
            concurrent_commits(4),
        ),
        DatabaseWorkload(
            "commits_16",
            "one-object commits, 16 writer processes",
            "commits/s",
            "higher",
            concurrent_commits(16),
        ),
        DatabaseWorkload(
            "delay",
            "commit in one process until another sees it (ours: through a "
            "second server), p50",
            "ms",
            "lower",
            delay,
        ),
        DatabaseWorkload(
            "idle_load",
            f"PostgreSQL statements/s, {IDLE_PROCESSES} idle processes "
            f"(a transaction every {IDLE_PERIOD:g} s each)",
            "statements/s",
            "lower",
            idle_load,
        ),
    ]


# -- the run -------------------------------------------------------------------


def _copy_seed(servers: RelStorageServers, seed: Seed) -> None:
    source = FileStorage(seed.path, blob_dir=seed.blob_dir, read_only=True)
    storage = servers.storage("seed")
    try:
        storage.copyTransactionsFrom(source)
    finally:
        storage.close()
        source.close()


def _systems(bench: Bench, seed: Seed) -> list[System]:
    systems = []
    for key, client, label in SYSTEMS:
        directory = bench.work / key
        directory.mkdir()
        servers = RelStorageServers(bench.postgres, directory)
        _log(f"{key}: copying the seed into database {servers.database}")
        _copy_seed(servers, seed)
        target: Any = [servers.dsn, str(directory)]
        system = System(key, client, None, label, target, None, str(directory))
        system.state["database"] = servers
        if client == OURS:
            addresses = []
            for number in range(2):
                child, address = start_server(
                    bench.children,
                    "ours",
                    "",
                    "",
                    str(bench.work),
                    name=f"{key}-server-{number}",
                    storage_section=servers.zeo_conf(f"server-{number}"),
                )
                addresses.append(list(address))
            system.server = "ours"
            system.server_pid = child.pid
            system.target = addresses[0]
            system.state["addresses"] = addresses
        systems.append(system)
    return systems


def _measure(
    workload: DatabaseWorkload, bench: Bench, system: System, run: int
) -> dict[str, Any]:
    try:
        measurement = workload.measure(bench, system)
    except Exception as error:
        traceback.print_exc()
        _log(f"{workload.name} run {run + 1} {system.key}: FAILED {error!r}")
        return {"value": None, "extras": {}, "error": repr(error)}
    extras = {k: round(v, 4) for k, v in measurement.extras.items()}
    _log(
        f"{workload.name} run {run + 1} {system.key}: {measurement.value:.4g} {extras}"
    )
    return {"value": measurement.value, "extras": measurement.extras}


def run(settings: DatabaseSettings, work: Path, children: Children) -> dict[str, Any]:
    machine = report.machine()
    machine["packages"].update({name: _version(name) for name in PACKAGES})
    _compile_bytecode()
    postgres = PostgresServer(POSTGRES_SETTINGS)
    try:
        postgres.start()
        _create_extension(postgres)
        seed = build_seed(
            str(work / "seed"),
            count=settings.objects,
            restart_count=0,
            workers=IDLE_PROCESSES,
            blob_sizes=(),
        )
        context = Context(
            Settings(settings.objects, 0, {}, settings.commit_seconds, 0),
            seed,
            [],
            children,
        )
        bench = Bench(settings, postgres, children, work, context)
        systems = _systems(bench, seed)
        workloads = []
        for workload in all_workloads(settings):
            measured: dict[str, list[dict[str, Any]]] = {s.key: [] for s in systems}
            for number in range(settings.runs):
                order = systems if number % 2 == 0 else systems[::-1]
                for system in order:
                    measured[system.key].append(
                        _measure(workload, bench, system, number)
                    )
            workloads.append(
                {
                    "name": workload.name,
                    "description": workload.description,
                    "unit": workload.unit,
                    "better": workload.better,
                    "results": report.summarize(measured, BASELINE),
                }
            )
        version = _postgres_version(postgres)
    finally:
        children.close()
        postgres.remove()
    return {
        "baseline": BASELINE,
        "systems": [{"key": s.key, "label": s.label} for s in systems],
        "settings": asdict(settings),
        "postgres": version,
        "machine": machine,
        "workloads": workloads,
    }


def _create_extension(postgres: PostgresServer) -> None:
    connection = psycopg2.connect(postgres.dsn("postgres"))
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION pg_stat_statements")
    finally:
        connection.close()


def _postgres_version(postgres: PostgresServer) -> str:
    connection = psycopg2.connect(postgres.dsn("postgres"))
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            return str(cursor.fetchone()[0])
    finally:
        connection.close()


# -- the report ---------------------------------------------------------------


def _value(value: float | None) -> str:
    if value is None:
        return "failed"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _ratio(value: float | None, baseline: float | None) -> str:
    """A ratio, or ``n/a`` when the baseline is not above 0 (a delay in
    which the reader saw the commit before the committer's call
    returned)."""
    if baseline is not None and baseline <= 0:
        return "n/a"
    return "failed" if value is None else f"{value:.2f}"


def _detail(workload: dict[str, Any], key: str) -> str:
    extras = workload["results"][key]["extras"]
    name = workload["name"]
    if name == "delay":
        return (
            f"p50 {_value(extras.get('p50_ms'))} ms, "
            f"p99 {_value(extras.get('p99_ms'))} ms; from the commit's start "
            f"p50 {_value(extras.get('from_start_p50_ms'))} ms, "
            f"p99 {_value(extras.get('from_start_p99_ms'))} ms"
        )
    if name in ("commits_4", "commits_16"):
        return (
            f"p50 {_value(extras.get('p50_ms'))} ms, "
            f"p99 {_value(extras.get('p99_ms'))} ms"
        )
    if name == "idle_load":
        poll = "transaction start" if key == BASELINE else "look of a feed"
        return (
            f"{_value(extras.get('transactions_per_s'))} transactions/s; "
            f"{_value(extras.get('statements_per_poll'))} statements per {poll}"
        )
    return f"{_value(extras.get('ms'))} ms in all"


def markdown(results: dict[str, Any]) -> str:
    systems = results["systems"]
    base, ours = systems[0], systems[1]
    settings = results["settings"]
    machine = results["machine"]
    lines = [
        "# RelStorage in the application against our server on RelStorage",
        "",
        f"Command: `{results['command']}` ({results['elapsed_s']:.0f} s); "
        f"{settings['runs']} round(s) per row, the two systems in turn (the "
        "order reversed every other round); medians.  One PostgreSQL "
        f"{results['postgres']} server, a fresh database per system holding "
        "the same seed.  **A**: "
        f"{base['label']}; **B**: {ours['label']} (two servers on the "
        "database, blobs in the database).  Ratio = B / A: above 1 is "
        "better for `higher` rows, below 1 for `lower` rows; the paired ratio "
        "is the median of each round's ratio.",
        "",
        "| workload | unit | better | A | B | B / A | B / A paired | A details "
        "| B details |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for workload in results["workloads"]:
        a = workload["results"][base["key"]]
        b = workload["results"][ours["key"]]
        lines.append(
            f"| `{workload['name']}` | {workload['unit']} | {workload['better']} "
            f"| {_value(a['median'])} | {_value(b['median'])} "
            f"| {_ratio(b['ratio'], a['median'])} "
            f"| {_ratio(b['paired_ratio'], a['median'])} "
            f"| {_detail(workload, base['key'])} | {_detail(workload, ours['key'])} |"
        )
    lines += ["", "What each row is:", ""]
    lines += [f"* `{w['name']}`: {w['description']}." for w in results["workloads"]]
    lines += [
        "",
        f"`cold_read` reads {settings['objects']} objects of ~570 bytes; our "
        "client prefetches a container's values (`readahead`), RelStorage "
        "loads one at a time.  `commits_N` run "
        f"{settings['commit_seconds']:g} s.  `delay` is "
        f"{settings['delay_commits']} commits, from each commit's return "
        "until the reading process, beginning a transaction every "
        "millisecond, reads the new value (negative when the reader sees it "
        "before the committer's call returns; from the commit's start in the "
        "details); ours reads through the second server (its change feed "
        "looks every 0.1 s, `database-poll-interval`'s default), so its "
        "delay is about half that interval and at most all of it, while A's "
        "is the reader's next poll: a ratio of the two says little.  "
        "`idle_load` counts for "
        f"{settings['idle_seconds']:g} s what PostgreSQL ran for the database "
        "(`pg_stat_statements` calls; the transactions from "
        "`pg_stat_database`, which backends report up to a second late): "
        f"RelStorage polls as each of the {IDLE_PROCESSES} processes begins "
        f"its transaction (one every {IDLE_PERIOD:g} s, a Zope worker's "
        "periodic task), so its load grows with processes and requests; our "
        "clients are told, and the load is each server's change feed, the "
        "same for any number of clients.",
        "",
        "## Machine",
        "",
        f"{machine['cpu_model']}, {machine['cores']} cores, "
        f"{machine['ram_gib']} GiB, {machine['os']}, {machine['python']}; "
        + ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
        + ".  Load average at the start "
        + " / ".join(f"{x:.2f}" for x in machine["load_average_at_start"])
        + ", at the end "
        + " / ".join(f"{x:.2f}" for x in machine["load_average_at_end"])
        + " (this benchmark's own processes included)."
        + _shared_note(machine),
        "",
    ]
    return "\n".join(lines)


def _shared_note(machine: dict[str, Any]) -> str:
    """The end's load includes this benchmark's own processes; the start's
    is other work's."""
    if machine["load_average_at_start"][0] > 0.5 * (machine["cores"] or 1):
        return "  Other work shared the machine: its load was high at the start."
    return ""


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _log(message: str) -> None:
    print(f"[database] {message}", file=sys.stderr, flush=True)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m bench.database",
        description="Application processes on RelStorage directly against "
        "our client and server on RelStorage, on one PostgreSQL.",
    )
    parser.add_argument("--runs", type=int, default=None, help="rounds (default 3)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke mode, 1 short round"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.runs is not None:
        settings = DatabaseSettings(**{**asdict(settings), "runs": args.runs})
    signal.signal(signal.SIGTERM, _terminate)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zodbserver-database-") as temp:
        results = run(settings, Path(temp), Children(temp))
    results["command"] = shlex.join(["python", "-m", "bench.database", *argv])
    results["elapsed_s"] = time.perf_counter() - started
    results["machine"]["load_average_at_end"] = os.getloadavg()
    args.output.mkdir(parents=True, exist_ok=True)
    report.write_json(str(args.output / "results.json"), results)
    (args.output / "RESULTS.md").write_text(markdown(results))
    _log(f"wrote {args.output / 'RESULTS.md'} in {results['elapsed_s']:.0f} s")
    failed = [
        (w["name"], key)
        for w in results["workloads"]
        for key, entry in w["results"].items()
        if entry["median"] is None
    ]
    if failed:
        _log(f"failed measurements: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
