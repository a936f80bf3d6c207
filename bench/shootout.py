"""``python -m bench.shootout``: zodbshootout through both stacks.

zodbshootout (with pyperf) is the benchmark people quote for ZODB storages.
This runs it, unmodified, twice in one run: once through ZEO 6's client
(``<zeoclient>``) against ZEO 6's server, once through ours
(``<clientstorage>``) against ours, each server a child process over a fresh
FileStorage.  The two runs use separate configuration files because ZEO's
and zodbserver's ZConfig components both define the ``clientstorage`` and
``ssl`` section types, so one file cannot import both.  The report gives
each workload's median per concurrency level and the ratio ours / ZEO
(below 1 is faster: every figure is a time).  zodbshootout also times an
in-process MappingStorage as a floor; it is shown as it comes.

Results go to ``--output`` (default ``bench/results``) as ``shootout.json``
and ``SHOOTOUT.md``.  Exit status 1 if zodbshootout failed or a workload is
missing for either stack.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pyperf

from .processes import Children, start_server

DEFAULT_OUTPUT = str(Path(__file__).resolve().parent / "results")
WORKLOADS = ("add", "update", "cold", "hot")
STACKS = {
    # stack: (ZConfig component, client section)
    "zeo": ("ZEO", "zeoclient"),
    "ours": ("zodbserver", "clientstorage"),
}
#: "{c=2 processes, o=100} ours: add 100 objects" -> concurrency, storage, test
#: How zodbshootout logs a benchmark function that raised.
_FAILURE = "ERROR [zodbshootout"
_NAME = re.compile(r"\{c=(\d+) \w+, o=\d+\} (\S+): (.+)$")


class ShootoutError(RuntimeError):
    """zodbshootout failed or did not report every workload."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.shootout",
        description="zodbshootout through ZEO 6's stack and zodbserver's.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke mode: one value, 50 objects"
    )
    parser.add_argument(
        "--objects", type=int, default=None, help="objects per transaction (1000)"
    )
    parser.add_argument(
        "--concurrency",
        default=None,
        help="comma-separated process counts (default 1,2)",
    )
    parser.add_argument(
        "--output", default=DEFAULT_OUTPUT, help="directory for the result files"
    )
    return parser


def shootout_options(args: argparse.Namespace) -> list[str]:
    objects = args.objects or (50 if args.quick else 1000)
    # Two values per process at least: the second cold read runs after
    # zodbshootout has cleared the client cache.
    timing = (
        ["-p", "1", "-n", "2", "-w", "0", "-l", "1"]
        if args.quick
        else ["-p", "4", "-n", "3"]
    )
    return [
        *timing,
        "--fail-fast",
        "--object-counts",
        str(objects),
    ]


def client_config(stack: str, address: tuple[str, int]) -> str:
    component, section = STACKS[stack]
    return textwrap.dedent(
        f"""\
        %import {component}
        <zodb {stack}>
          <{section}>
            server {address[0]}:{address[1]}
          </{section}>
        </zodb>
        """
    )


def run_stack(stack: str, concurrency: int, options: list[str], work: Path) -> Path:
    """Run zodbshootout through ``stack`` with ``concurrency`` processes, on
    a fresh server and FileStorage; the path of its pyperf JSON."""
    name = f"{stack}-c{concurrency}"
    children = Children(str(work))
    try:
        _, address = start_server(
            children,
            stack,
            str(work / f"{name}.fs"),
            str(work / f"{name}-blobs"),
            str(work),
        )
        config = work / f"{name}-client.conf"
        config.write_text(client_config(stack, address))
        results = work / f"{name}.json"
        command = [
            sys.executable,
            "-m",
            "zodbshootout",
            *options,
            "-c",
            str(concurrency),
            "-o",
            str(results),
            str(config),
            *WORKLOADS,
        ]
        log = work / f"{name}-shootout.log"
        with open(log, "w") as stream:
            done = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT)
        text = log.read_text(errors="replace")
        # A benchmark function that raises is logged, given a made-up time,
        # and zodbshootout still exits 0: its error lines are the failure.
        errors = [line for line in text.splitlines() if _FAILURE in line]
        if done.returncode != 0 or errors or not results.exists():
            tail = text[text.find(errors[0]) :] if errors else text
            raise ShootoutError(f"zodbshootout {name} failed:\n{tail[-3000:]}")
        return results
    finally:
        children.close()


def read_results(path: Path) -> dict[tuple[int, str, str], float]:
    """(concurrency, storage, test) -> median seconds."""
    medians = {}
    for benchmark in pyperf.BenchmarkSuite.load(str(path)).get_benchmarks():
        match = _NAME.match(benchmark.get_name())
        if match is None:
            continue
        concurrency, storage, test = match.groups()
        medians[int(concurrency), storage, test] = benchmark.median()
    return medians


def compare(
    results: dict[str, dict[tuple[int, str, str], float]],
) -> list[dict[str, Any]]:
    """One row per (concurrency, test): each stack's median and the ratio."""
    zeo, ours = results["zeo"], results["ours"]
    rows = []
    for concurrency, storage, test in sorted(zeo):
        if storage != "zeo":
            continue
        mine = ours.get((concurrency, "ours", test))
        if mine is None:
            raise ShootoutError(f"no result via ours for {test!r} at c={concurrency}")
        floor = [
            seconds
            for (c, name, t), seconds in {**zeo, **ours}.items()
            if c == concurrency and t == test and name == "MappingStorage"
        ]
        rows.append(
            {
                "concurrency": concurrency,
                "test": test,
                "zeo_s": zeo[concurrency, storage, test],
                "ours_s": mine,
                "ratio": mine / zeo[concurrency, storage, test],
                "mapping_storage_s": statistics.median(floor) if floor else None,
            }
        )
    tests = {row["test"].split()[0] for row in rows}
    missing = {"add", "update", "read"} - tests
    if missing:
        raise ShootoutError(f"zodbshootout reported no {sorted(missing)} rows")
    return rows


def markdown(rows: list[dict[str, Any]], options: list[str]) -> str:
    lines = [
        "# zodbshootout: ZEO 6 and zodbserver",
        "",
        f"`zodbshootout {' '.join(options)} -c N CONFIG {' '.join(WORKLOADS)}`,",
        "through each stack (client and server of the same project), each run",
        "on a fresh server and FileStorage.  Times are zodbshootout's medians;",
        "ratio = ours / ZEO, below 1 is faster.",
        "",
        "| processes | test | ZEO 6 | zodbserver | ratio | MappingStorage |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        floor = row["mapping_storage_s"]
        lines.append(
            f"| {row['concurrency']} | {row['test']} | {_ms(row['zeo_s'])} "
            f"| {_ms(row['ours_s'])} | {row['ratio']:.2f} "
            f"| {_ms(floor) if floor is not None else '-'} |"
        )
    return "\n".join(lines) + "\n"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = shootout_options(args)
    work = Path(tempfile.mkdtemp(prefix="shootout-"))
    try:
        levels = [int(level) for level in (args.concurrency or "1,2").split(",")]
        results: dict[str, dict[tuple[int, str, str], float]] = {}
        for concurrency in levels:
            for stack in STACKS:
                path = run_stack(stack, concurrency, options, work)
                results.setdefault(stack, {}).update(read_results(path))
        rows = compare(results)
    except ShootoutError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "shootout.json").write_text(json.dumps(rows, indent=2) + "\n")
    (output / "SHOOTOUT.md").write_text(markdown(rows, options))
    print(markdown(rows, options))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
