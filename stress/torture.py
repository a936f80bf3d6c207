"""Torture: kill the server hundreds of times under writers; kill clients
mid-vote.

::

    .venv/bin/python -m stress.torture [--kills 500] [--seed S]
        [--vote-kills 50] [--vote-stops 5] [--transaction-timeout 5]
        [--server ours|zeo] [--directory DIR] [--keep]
        [--output stress/results/torture.md]

Two halves, both the machinery of the default suite's short tests, run
long here:

The storm (``tests/support/kill_storm.py``; short in
``tests/e2e/test_kill_storm.py``).  Four writers -- two through ZEO 6's
client, two through ours, one of each writing a blob in every
transaction -- commit while the server process is SIGKILLed ``--kills``
times at random instants drawn from ``--seed`` and restarted on the same
files and port.  Afterwards every acknowledged commit is in the file with
its value and, for the blob writers, its blob; no writer is stuck; the file
passes ``fstest``.  Each restart is timed from the spawn of the server
process to its accepting a connection (polled every 20 ms), and to the
first commit a writer saw acknowledged by the new process (a commit begun
after the old process was reaped; it includes the clients' reconnection,
which polls every 0.05 s doubling to 0.5 s).  A restart killed again before
any commit landed has no such time; the report counts them.

Clients killed mid-vote (``tests/support/vote_kills.py``; short in
``tests/e2e/test_vote_kills.py``).  A ZEO 6 client in its own process
votes, so it holds the commit lock; another client's commit waits for the
lock; the first process is signalled before its ``tpc_finish``.  Three
series, each on a fresh server:

- ``--vote-kills`` SIGKILLs with ``transaction-timeout`` set
  (``--transaction-timeout``), and as many without it: the kernel closes
  the socket, the server must hand the lock on within the timeout -- and,
  with it set, before the timeout would have;
- ``--vote-stops`` SIGSTOPs with the timeout set: the connection stays
  open and silent, so only the timeout frees the lock; the other commit
  must land about that long after the vote, not before.

Every series checks that the voted, unfinished transaction never shows and
the file passes ``fstest``.  Times: signal to the other client's
``tpc_finish`` returning, and vote (answered) to it.

The report (stdout, and ``--output`` as Markdown) gives the counts, the
checks' results, p50/p90/max of the times, the total time, and the machine:
cores, RAM, kernel, Python, the filesystem of the data, and the load
average sampled every 5 s (other jobs may share the machine).  The exit
status is 1 if any check failed (the report says which, and the data are
kept).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The storm and the vote kills are the test suite's machinery, in
# tests/support, as pytest finds it (pythonpath = ["tests"]).
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench.report import machine  # noqa: E402

from support.kill_storm import (  # noqa: E402
    RECOVERY,
    Restart,
    StormResult,
    Verification,
    check_storage,
    run_storm,
)
from support.vote_kills import EARLY, Series, Trial, run_trials  # noqa: E402

DEFAULT_OUTPUT = ROOT / "stress" / "results" / "torture.md"
#: How late after the transaction timeout a stopped victim's lock may be
#: freed (a busy machine).
LATE = 10.0
LOAD_INTERVAL = 5.0


@dataclass
class Options:
    kills: int
    seed: int
    vote_kills: int
    vote_stops: int
    transaction_timeout: float
    server: str
    directory: Path | None
    keep: bool
    output: Path | None
    argv: list[str]


def parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m stress.torture",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--kills", type=int, default=500, help="server SIGKILLs")
    parser.add_argument("--seed", type=int, help="the storm's instants (random)")
    parser.add_argument(
        "--vote-kills",
        type=int,
        default=50,
        help="clients SIGKILLed mid-vote, with the timeout and without each",
    )
    parser.add_argument(
        "--vote-stops", type=int, default=5, help="clients SIGSTOPped mid-vote"
    )
    parser.add_argument(
        "--transaction-timeout", type=float, default=5.0, help="seconds"
    )
    parser.add_argument("--server", choices=("ours", "zeo"), default="ours")
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
    parser.add_argument("--no-output", action="store_true", help="stdout only")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    return Options(
        kills=args.kills,
        seed=seed,
        vote_kills=args.vote_kills,
        vote_stops=args.vote_stops,
        transaction_timeout=args.transaction_timeout,
        server=args.server,
        directory=args.directory,
        keep=args.keep,
        output=None if args.no_output else args.output,
        argv=list(sys.argv[1:] if argv is None else argv),
    )


class LoadSampler:
    """The 1-minute load average, every ``LOAD_INTERVAL`` seconds."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(LOAD_INTERVAL):
                return


@dataclass
class Outcome:
    """Everything the report shows."""

    options: Options
    directory: Path
    started: str = ""
    total: float = 0.0
    storm: StormResult | None = None
    verification: Verification | None = None
    series: dict[str, Series] = field(default_factory=dict)
    #: What failed, by phase: the traceback's last lines.
    errors: dict[str, str] = field(default_factory=dict)
    load_at_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_at_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_samples: list[float] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(options: Options) -> Outcome:
    if options.directory is not None:
        options.directory.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="torture-", dir=options.directory))
    outcome = Outcome(options, directory)
    outcome.started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    outcome.machine = machine_details(directory)
    outcome.load_at_start = os.getloadavg()
    # The clients' complaints while the server is down (ZEO's, ZODB's and
    # transaction's warnings) go to a file rather than the terminal.
    logging.basicConfig(
        filename=directory / "clients.log",
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    began = time.monotonic()
    with LoadSampler() as load:
        _phase(outcome, "storm", lambda: _storm(outcome, directory / "storm"))
        timeout = options.transaction_timeout
        vote_series = (
            (
                "SIGKILL, transaction-timeout",
                signal.SIGKILL,
                timeout,
                options.vote_kills,
            ),
            ("SIGKILL, no timeout", signal.SIGKILL, None, options.vote_kills),
            (
                "SIGSTOP, transaction-timeout",
                signal.SIGSTOP,
                timeout,
                options.vote_stops,
            ),
        )
        for number, (name, signal_number, series_timeout, trials) in enumerate(
            vote_series
        ):
            if trials <= 0:
                continue
            path = directory / f"votes-{number}"
            path.mkdir()
            _phase(
                outcome,
                name,
                lambda n=name, s=signal_number, t=series_timeout, k=trials, p=path: (
                    _votes(outcome, n, s, t, k, p)
                ),
            )
    outcome.total = time.monotonic() - began
    outcome.load_at_end = os.getloadavg()
    outcome.load_samples = load.samples
    return outcome


def _phase(outcome: Outcome, name: str, body: Any) -> None:
    log(f"torture: {name} ...")
    try:
        body()
    except Exception:
        outcome.errors[name] = traceback.format_exc(limit=-4)
        log(f"torture: {name} FAILED\n{outcome.errors[name]}")


def _storm(outcome: Outcome, directory: Path) -> None:
    options = outcome.options
    directory.mkdir()
    began = time.monotonic()

    def progress(done: int, restart: Restart) -> None:
        if done % 25 == 0 or done == options.kills:
            rate = done / (time.monotonic() - began)
            log(
                f"torture: {done}/{options.kills} kills, {rate * 60:.0f}/min, "
                f"restart to listening {restart.to_listening:.2f}s, "
                f"load {os.getloadavg()[0]:.1f}"
            )

    storm = run_storm(
        directory,
        kills=options.kills,
        seed=options.seed,
        server_kind=options.server,
        progress=progress,
    )
    outcome.storm = storm
    outcome.verification = check_storage(directory, storm.writers, options.seed)
    assert outcome.verification.commits == storm.acknowledged


def _votes(
    outcome: Outcome,
    name: str,
    signal_number: signal.Signals,
    transaction_timeout: float | None,
    trials: int,
    directory: Path,
) -> None:
    stopped = signal_number is signal.SIGSTOP
    timeout = outcome.options.transaction_timeout
    deadline = timeout + LATE if stopped else timeout

    def progress(done: int, trial: Trial) -> None:
        if done % 10 == 0 or done == trials:
            log(
                f"torture: {name}: {done}/{trials}, signal to commit "
                f"{trial.signal_to_commit:.3f}s"
            )

    outcome.series[name] = run_trials(
        directory,
        signal_number=signal_number,
        transaction_timeout=transaction_timeout,
        trials=trials,
        deadline=deadline,
        kind=outcome.options.server,
        progress=progress,
    )


def machine_details(directory: Path) -> dict[str, Any]:
    details = machine()
    details["affinity"] = len(os.sched_getaffinity(0))
    details["kernel"] = f"{platform.release()} ({platform.version()})"
    details["python_full"] = sys.version.replace("\n", " ")
    details["filesystem"] = filesystem(directory)
    return details


def filesystem(directory: Path) -> str:
    """The mount (device, type, options) holding ``directory``."""
    best: tuple[str, str, str, str] | None = None
    target = str(directory.resolve())
    try:
        with open("/proc/self/mounts") as file:
            for line in file:
                device, mount, kind, flags, *_ = line.split()
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and (best is None or len(mount) > len(best[1])):
                    best = (device, mount, kind, flags)
    except OSError:
        return "unknown"
    if best is None:
        return "unknown"
    device, mount, kind, flags = best
    usage = shutil.disk_usage(directory)
    return (
        f"{kind} on {device} mounted at {mount} ({flags}); "
        f"{usage.free / 2**30:.0f} GiB free of {usage.total / 2**30:.0f} GiB"
    )


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    rank = max(1, math.ceil(len(ordered) * fraction))
    return ordered[min(len(ordered), rank) - 1]


def spread(values: Sequence[float], unit: float = 1.0, digits: int = 2) -> str:
    """``p50 / p90 / max`` of ``values`` (divided by ``unit``)."""
    if not values:
        return "-"
    parts = (percentile(values, 0.5), percentile(values, 0.9), max(values))
    return " / ".join(f"{value / unit:.{digits}f}" for value in parts)


def report(outcome: Outcome) -> str:
    options = outcome.options
    lines = [
        "# Torture: server SIGKILL storm, clients killed mid-vote",
        "",
        f"Run {outcome.started}: `python -m stress.torture "
        f"{' '.join(options.argv)}` (seed {options.seed}, server {options.server}).",
        "",
        f"**Result: {'FAILED' if outcome.errors else 'all checks passed'}.**"
        f"  Total time {outcome.total / 60:.1f} min.",
        "",
    ]
    for name, error in outcome.errors.items():
        lines += [f"Failed: {name}", "", "```", error.rstrip(), "```", ""]
    lines += _storm_section(outcome)
    lines += _votes_section(outcome)
    lines += _machine_section(outcome)
    return "\n".join(lines) + "\n"


def _storm_section(outcome: Outcome) -> list[str]:
    options = outcome.options
    lines = ["## Server SIGKILL storm", ""]
    storm, verified = outcome.storm, outcome.verification
    if storm is None:
        return [*lines, "Not completed (see the failure above).", ""]
    minutes = (storm.ended - storm.began) / 60
    per_writer = ", ".join(f"{w.name} {len(w.acks)}" for w in storm.writers)
    failures = ", ".join(f"{k} {v}" for k, v in sorted(storm.failures.items()))
    lines += [
        "| | |",
        "|---|---|",
        f"| kills done | {len(storm.restarts)} of {options.kills} "
        f"({minutes:.1f} min, {len(storm.restarts) / minutes:.0f}/min) |",
        f"| commits acknowledged | {storm.acknowledged} ({per_writer}) |",
    ]
    if verified is not None:
        lines += [
            f"| commits verified | {verified.commits} "
            "(value in the file, in the acknowledged order) |",
            f"| blobs verified | {verified.blobs} (content of every acknowledged "
            "blob revision) |",
            f"| fstest | clean: {verified.transactions} transactions, all "
            f"iterate in tid order, Data.fs {verified.size / 2**20:.1f} MiB |",
        ]
    else:
        lines.append("| verification | not completed |")
    lines += [
        "| failed commit attempts (expected: the server died under them; a "
        "ConflictError follows a commit that landed though its answer was "
        f"lost) | {failures or 'none'} |",
        f"| writers stuck | none (each committed twice more within "
        f"{RECOVERY:.0f} s of the last restart) |",
        "",
    ]
    lines += _restart_table(storm.restarts)
    return lines


def _restart_table(restarts: list[Restart]) -> list[str]:
    listening = [r.to_listening for r in restarts]
    commits = [t for r in restarts if (t := r.to_first_commit) is not None]
    tenth = max(1, len(restarts) // 10)
    early, late = restarts[:tenth], restarts[-tenth:]

    def first(rs: list[Restart]) -> list[float]:
        return [t for r in rs if (t := r.to_first_commit) is not None]

    return [
        "Restart times, seconds from the spawn of the server process "
        "(p50 / p90 / max):",
        "",
        "| | n | all restarts | first tenth | last tenth |",
        "|---|---|---|---|---|",
        f"| to accepting connections | {len(listening)} | {spread(listening)} "
        f"| {spread([r.to_listening for r in early])} "
        f"| {spread([r.to_listening for r in late])} |",
        f"| to the first acknowledged commit | {len(commits)} | {spread(commits)} "
        f"| {spread(first(early))} | {spread(first(late))} |",
        "",
        f"{len(restarts) - len(commits)} of {len(restarts)} restarts were killed "
        "again before any writer's commit landed on them (the server is up "
        "for 0.05 to 0.8 s, uniformly, between restarts), so they have no time "
        "to the first commit.  That time includes the clients' reconnection "
        "(they poll every 0.05 s, doubling up to 0.5 s, while the server is "
        "down); accepting connections is polled every 20 ms.",
        "",
    ]


def _votes_section(outcome: Outcome) -> list[str]:
    options = outcome.options
    timeout = options.transaction_timeout
    lines = [
        "## Clients killed mid-vote",
        "",
        "A ZEO 6 `ClientStorage` in its own process votes (holds the commit "
        "lock); another client's commit waits for the lock; the first process "
        "is signalled before `tpc_finish`.  Times in milliseconds "
        "(p50 / p90 / max); each series on a fresh server.",
        "",
        "| series | trials | signal → other commit | vote → other commit | checks |",
        "|---|---|---|---|---|",
    ]
    for name, series in outcome.series.items():
        signalled = [t.signal_to_commit for t in series.trials]
        voted = [t.vote_to_commit for t in series.trials]
        if series.signal == "SIGSTOP":
            check = (
                f"other commit ≥ {timeout - EARLY:g} s after the vote (the "
                "timeout freed the lock, not before); timeout logged"
            )
        elif series.transaction_timeout is not None:
            check = (
                f"other commit < {timeout:g} s after the signal and before "
                "the timeout would have freed the lock"
            )
        else:
            check = f"other commit < {timeout:g} s after the signal"
        setting = series.transaction_timeout
        lines.append(
            f"| {name}{f' {setting:g} s' if setting is not None else ''} "
            f"| {len(series.trials)} "
            f"| {spread(signalled, 0.001, 0)} | {spread(voted, 0.001, 0)} "
            f"| {check}; the voted transaction absent; fstest clean |"
        )
    if not outcome.series:
        lines.append("| - | 0 | - | - | not run |")
    return [*lines, ""]


def _machine_section(outcome: Outcome) -> list[str]:
    details = outcome.machine
    samples = outcome.load_samples or [0.0]
    packages = ", ".join(f"{k} {v}" for k, v in details["packages"].items() if v)
    start, end = outcome.load_at_start, outcome.load_at_end
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
        f"| load average (1/5/15 min) | at start {_load(start)}; at end {_load(end)} |",
        f"| 1-min load during the run | min {min(samples):.1f}, median "
        f"{percentile(samples, 0.5):.1f}, max {max(samples):.1f} "
        f"({len(samples)} samples, every {LOAD_INTERVAL:.0f} s) |",
        "",
        "Other jobs shared the machine: a load above the core count means "
        "the server, the writers and the victims waited for a CPU, which "
        "lengthens every time above.",
        "",
    ]


def _load(values: tuple[float, float, float]) -> str:
    return " / ".join(f"{value:.2f}" for value in values)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    outcome = run(options)
    text = report(outcome)
    print(text)
    if options.output is not None:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text(text)
        log(f"torture: wrote {options.output}")
    if outcome.errors or options.keep:
        log(f"torture: the data are in {outcome.directory}")
    else:
        shutil.rmtree(outcome.directory, ignore_errors=True)
    return 1 if outcome.errors else 0


if __name__ == "__main__":
    sys.exit(main())
