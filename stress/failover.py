"""Failover rounds, many: no acknowledged commit lost with sync-replicas.

::

    .venv/bin/python -m stress.failover [--rounds 100] [--seed S]
        [--directory DIR] [--keep] [--output stress/results/failover.md]

The machinery is ``tests/support/failover.py`` (short in
``tests/e2e/test_failover.py``): two server processes with
``sync-replicas 1``; writers commit through the primary (a blob in every
third commit) until it is SIGKILLed at a seeded random instant; the
replica is promoted and must hold every acknowledged commit and blob; the
killed server runs ``zeoserver rejoin`` (moving aside what it had of its
own) and follows the new primary.  The report gives the rounds, the
commits acknowledged and lost, how often rejoin moved transactions aside,
the promotion times and the machine; the exit status is 1 if any commit
was lost.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from stress.torture import machine_details, spread  # noqa: E402
from support.failover import Result, run_failover  # noqa: E402

DEFAULT_OUTPUT = ROOT / "stress" / "results" / "failover.md"


def report(
    result: Result, seed: int, seconds: float, details: dict[str, object]
) -> str:
    rounds = result.rounds
    acknowledged = sum(r.acknowledged for r in rounds)
    moved = sum(1 for r in rounds if r.rejoin_moved)
    lines = [
        "# Failover rounds",
        "",
        f"{len(rounds)} rounds (seed {seed}) in {seconds:.0f} s: "
        f"{acknowledged} commits acknowledged, **{len(result.lost)} lost**.",
        "",
        "| | |",
        "|---|---|",
        f"| commits acknowledged per round (p50 / p90 / max) | "
        f"{spread([r.acknowledged for r in rounds], digits=0)} |",
        f"| primary killed after (s, p50 / p90 / max) | "
        f"{spread([r.killed_after for r in rounds])} |",
        f"| promote answered in (ms, p50 / p90 / max) | "
        f"{spread([r.promote_seconds for r in rounds], unit=0.001, digits=1)} |",
        f"| rounds where rejoin moved the killed primary's own "
        f"transactions aside | {moved} of {len(rounds)} |",
        "",
    ]
    if result.lost:
        lines += ["Lost:", "", *(f"- {lost}" for lost in result.lost[:50]), ""]
    lines += [
        "## Machine",
        "",
        f"{details['cpu_model']}, {details['affinity']} CPUs, "
        f"{details['ram_gib']} GiB; {details['kernel']}; Python "
        f"{details['python_full']}; data on {details['filesystem']}; load "
        f"average at the end {' / '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stress.failover")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    parser.add_argument("--directory", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the data")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    options = parser.parse_args(argv)
    directory = options.directory or Path(tempfile.mkdtemp(prefix="failover-"))
    began = time.monotonic()
    result = run_failover(directory, options.rounds, options.seed)
    text = report(
        result, options.seed, time.monotonic() - began, machine_details(directory)
    )
    print(text)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(text)
    if result.lost or options.keep:
        print(f"failover: the data are in {directory}", file=sys.stderr)
    else:
        shutil.rmtree(directory, ignore_errors=True)
    return 1 if result.lost else 0


if __name__ == "__main__":
    sys.exit(main())
