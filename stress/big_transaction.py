"""One big transaction: the server's memory and the commit's time, zodbserver
against ZEO 6.

    .venv/bin/python -m stress.big_transaction [--size 1GB] [--object-size 1MB]
        [--runs 1] [--threshold SIZE] [--kinds ours,zeo] [--directory DIR]
        [--output FILE]

For each run and each server kind (the order alternates from run to run),
a real server process serves a new, empty FileStorage in a directory of its
own under ``--directory`` (the system's temporary directory by default).
ZEO 6's ``ClientStorage``, in this process and the same for both servers,
commits two small objects (a warm-up: code paths and 1 MB buffers), then
one transaction of ``--size`` bytes: ``--size / --object-size`` new objects
of random bytes, through the storage API (``tpc_begin``, ``store`` for each,
``tpc_vote``, ``tpc_finish``).

Measured, from ``/proc/PID/status`` of the server:

``VmHWM``  the server's peak resident memory, before the big transaction
           (after the warm-up) and after it: the growth is what the
           transaction cost the server at its worst moment;
``VmRSS``  its resident memory after the commit;

and the commit's wall-clock time, from ``tpc_begin`` to the return of
``tpc_finish``, with its parts: ``stores`` (the client's ``store`` calls
return once the client has buffered and queued them, so the upload runs on
into the vote), ``vote`` (the rest of the upload; the server writes the
records and fsyncs) and ``finish``.

``--threshold`` sets our server's ``transaction-spool-threshold`` (its
default, 16MB, otherwise); ZEO 6 always spools a transaction to a temporary
file.  The table goes to stdout (and ``--output``), with the machine:
processors, memory, Python, kernel, and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zodbserver.units import parse_byte_size

ROOT = Path(__file__).resolve().parent.parent
# The server process is the test suite's, in tests/support, as pytest finds
# it (pythonpath = ["tests"]).
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench.report import machine  # noqa: E402

from support.server_processes import ServerProcess  # noqa: E402

OURS = "ours"
ZEO = "zeo"
KINDS = (OURS, ZEO)
MB = 1024 * 1024
#: Distinct random blocks the objects' data is cut from (each object gets
#: its own number in front, so no two are alike).
POOL = 16
CONNECT_TIMEOUT = 60.0
#: Seconds a vote or finish may take.
CALL_TIMEOUT = 3600.0


@dataclass
class Sample:
    kind: str
    objects: int
    size: int
    peak_before: int
    peak_after: int
    resident_after: int
    stores: float
    vote: float
    finish: float

    @property
    def commit(self) -> float:
        return self.stores + self.vote + self.finish


def commit(client: Any, objects: int, pool: list[bytes]) -> tuple[float, ...]:
    """One transaction of ``objects`` new objects; the seconds of its
    stores, vote and finish."""
    from ZODB.Connection import TransactionMetaData
    from ZODB.utils import p64, z64

    metadata = TransactionMetaData(description=f"{objects} objects")
    started = time.perf_counter()
    client.tpc_begin(metadata)
    for number in range(objects):
        block = pool[number % len(pool)]
        data = p64(number) + block[8:]
        client.store(client.new_oid(), z64, data, "", metadata)
    stored = time.perf_counter()
    client.tpc_vote(metadata)
    voted = time.perf_counter()
    client.tpc_finish(metadata)
    finished = time.perf_counter()
    return stored - started, voted - stored, finished - voted


def measure(kind: str, directory: Path, options: Options, pool: list[bytes]) -> Sample:
    from ZEO.ClientStorage import ClientStorage

    zeo_lines: tuple[str, ...] = ()
    if kind == OURS and options.threshold is not None:
        zeo_lines = (f"transaction-spool-threshold {options.threshold}",)
    with ServerProcess(kind, directory, zeo_lines=zeo_lines) as server:
        server.start()
        client = ClientStorage(
            server.address, wait_timeout=CONNECT_TIMEOUT, cache_size=MB
        )
        try:
            client._server.timeout = CALL_TIMEOUT  # votes of minutes
            commit(client, 2, pool)
            peak_before = server.proc_status("VmHWM") * 1024
            stores, vote, finish = commit(client, options.objects, pool)
            peak_after = server.proc_status("VmHWM") * 1024
            resident_after = server.proc_status("VmRSS") * 1024
        finally:
            client.close()
    return Sample(
        kind,
        options.objects,
        options.objects * options.object_size,
        peak_before,
        peak_after,
        resident_after,
        stores,
        vote,
        finish,
    )


@dataclass
class Options:
    size: int
    object_size: int
    runs: int
    threshold: str | None
    kinds: tuple[str, ...]
    directory: Path | None
    output: Path | None

    @property
    def objects(self) -> int:
        return max(1, self.size // self.object_size)


def parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m stress.big_transaction",
        description="Peak server memory and commit time of one big "
        "transaction, zodbserver against ZEO 6.",
    )
    parser.add_argument(
        "--size", default="1GB", help="the transaction's data (default 1GB)"
    )
    parser.add_argument(
        "--object-size", default="1MB", help="each object's data (default 1MB)"
    )
    parser.add_argument("--runs", type=int, default=1, help="runs of each kind")
    parser.add_argument(
        "--threshold",
        help="our server's transaction-spool-threshold (default: its own)",
    )
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="servers to run (ours,zeo)"
    )
    parser.add_argument(
        "--directory", type=Path, help="where the storages go (default: tmp)"
    )
    parser.add_argument("--output", type=Path, help="also write the table here")
    arguments = parser.parse_args(argv)
    kinds = tuple(kind for kind in arguments.kinds.split(",") if kind)
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        parser.error(f"--kinds: choose among {', '.join(KINDS)}")
    if arguments.threshold is not None:
        parse_byte_size(arguments.threshold)  # refused here, not by the server
    return Options(
        size=parse_byte_size(arguments.size),
        object_size=parse_byte_size(arguments.object_size),
        runs=arguments.runs,
        threshold=arguments.threshold,
        kinds=kinds,
        directory=arguments.directory,
        output=arguments.output,
    )


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def report(samples: list[Sample], options: Options, before: str, after: str) -> str:
    details = machine()
    lines = [
        f"One transaction of {options.objects} objects of "
        f"{options.object_size / MB:g} MB "
        f"(our spool threshold: {options.threshold or 'default'})",
        "",
        f"processors: {details['cores']} ({details['cpu_model']}), "
        f"memory: {details['ram_gib']} GiB",
        f"{details['python']}, {details['os']}",
        f"load average (1, 5, 15 min): before {before}, after {after}",
        "",
        "| server | commit s | stores s | vote s | finish s "
        "| VmHWM before MB | VmHWM after MB | VmHWM growth MB | VmRSS after MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for sample in samples:
        lines.append(
            f"| {sample.kind} | {sample.commit:.1f} | {sample.stores:.1f} "
            f"| {sample.vote:.1f} | {sample.finish:.1f} "
            f"| {sample.peak_before / MB:.0f} | {sample.peak_after / MB:.0f} "
            f"| {(sample.peak_after - sample.peak_before) / MB:.0f} "
            f"| {sample.resident_after / MB:.0f} |"
        )
    return "\n".join(lines) + "\n"


def run(options: Options) -> str:
    parent = tempfile.mkdtemp(prefix="big-transaction-", dir=options.directory)
    try:
        pool = [os.urandom(options.object_size) for _ in range(POOL)]
        before = load()
        samples = []
        for number in range(options.runs):
            order = options.kinds if number % 2 == 0 else options.kinds[::-1]
            for kind in order:
                directory = Path(parent) / f"{kind}-{number}"
                directory.mkdir()
                print(f"run {number + 1}: {kind} ...", file=sys.stderr, flush=True)
                samples.append(measure(kind, directory, options, pool))
                shutil.rmtree(directory)
        return report(samples, options, before, load())
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    table = run(options)
    print(table, end="")
    if options.output is not None:
        options.output.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
