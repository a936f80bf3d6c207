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
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zodbserver.units import parse_byte_size

OURS = "ours"
ZEO = "zeo"
KINDS = (OURS, ZEO)
MB = 1024 * 1024
#: Distinct random blocks the objects' data is cut from (each object gets
#: its own number in front, so no two are alike).
POOL = 16
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
CONNECT_TIMEOUT = 60.0
#: Seconds a vote or finish may take.
CALL_TIMEOUT = 3600.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server process of ``kind`` over ``directory/Data.fs``."""

    def __init__(self, kind: str, directory: Path, zeo_lines: Sequence[str]) -> None:
        self.kind = kind
        self.directory = directory
        self.address = ("127.0.0.1", free_port())
        self.zeo_lines = zeo_lines
        self.log_path = directory / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        conf = self.directory / "server.conf"
        zeo = "".join(f"  {line}\n" for line in self.zeo_lines)
        conf.write_text(
            f"<zeo>\n  address {self.address[0]}:{self.address[1]}\n{zeo}</zeo>\n"
            f"<filestorage 1>\n  path {self.directory / 'Data.fs'}\n</filestorage>\n"
        )
        if self.kind == ZEO:
            return [sys.executable, "-m", "ZEO.runzeo", "-C", str(conf)]
        var = str(self.directory / "var")
        command = [sys.executable, "-m", "zodbserver.cli", "-C", str(conf)]
        return [*command, "--var", var, "fg"]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the {self.kind} server exited: {self.log()}")
            try:
                with socket.create_connection(self.address, timeout=1.0):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the {self.kind} server does not listen: {self.log()}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def memory(self, field: str) -> int:
        """``field`` (``VmHWM``, ``VmRSS``) of the server process, in bytes."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {field} for process {self.pid}")


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

    zeo_lines = []
    if kind == OURS and options.threshold is not None:
        zeo_lines.append(f"transaction-spool-threshold {options.threshold}")
    server = Server(kind, directory, zeo_lines)
    server.start()
    try:
        client = ClientStorage(
            server.address, wait_timeout=CONNECT_TIMEOUT, cache_size=MB
        )
        try:
            client._server.timeout = CALL_TIMEOUT  # votes of minutes
            commit(client, 2, pool)
            peak_before = server.memory("VmHWM")
            stores, vote, finish = commit(client, options.objects, pool)
            peak_after = server.memory("VmHWM")
            resident_after = server.memory("VmRSS")
        finally:
            client.close()
    finally:
        server.stop()
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


def machine() -> list[str]:
    memory = "?"
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / MB:.1f} GiB"
    return [
        f"processors: {os.cpu_count()}, memory: {memory}",
        f"Python {platform.python_version()}, kernel {platform.release()}",
    ]


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def report(samples: list[Sample], options: Options, before: str, after: str) -> str:
    lines = [
        f"One transaction of {options.objects} objects of "
        f"{options.object_size / MB:g} MB "
        f"(our spool threshold: {options.threshold or 'default'})",
        "",
        *machine(),
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
