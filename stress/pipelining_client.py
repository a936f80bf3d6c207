"""A client that pipelines calls and never reads its replies: the server's
memory, zodbserver against ZEO 6.

    .venv/bin/python -m stress.pipelining_client [--calls 2000]
        [--object-size 100KB] [--seconds 30] [--cap 512MB] [--settle 5]
        [--read-back N] [--kinds ours,zeo] [--quick] [--directory DIR]
        [--output FILE]

For each server kind, a real server process at its default settings serves
a new FileStorage under ``--directory`` (the system's temporary directory
by default); ZEO 6's ``ClientStorage`` commits one object of
``--object-size`` random bytes.  Then a raw client (``support.raw_client``,
the handshake the server greets with, so Z5 pickle with ZEO 6 and M5
msgpack with ours) registers, shrinks its socket's receive buffer to 64 KB
and, from a thread, sends ``loadBefore`` of that object again and again,
``--calls`` calls per send, never reading its socket.  Each reply is the
whole object, so every send asks for ``calls × object-size`` of replies.

The server's ``VmRSS`` and ``VmHWM`` (``/proc/PID/status``) are read every
0.2 s until one of:

``seconds``  ``--seconds`` have passed;
``cap``      the server's resident memory grew by ``--cap``: it does not
             bound what it holds for the client (the server is SIGKILLed
             then, so the machine is not run out of memory);
``settled``  no send has completed for ``--settle`` seconds and the
             memory grew by less than 1 MB meanwhile: the server stopped
             reading the client and holds what it has;
``closed``   the server closed the client's connection.

"Calls sent" counts the sends that completed: the kernel's socket buffers
take some megabytes of calls after the server stops reading.  Then, the
first client still connected, another client's ``loadBefore`` must be
answered within 10 s (everyone else is served), and unless the run ended
at the cap or by a close, the first client reads every reply of every call
it sent (or the first ``--read-back``), which must come in the order sent.

``--quick`` is a short run for the test suite: ``--seconds 4 --settle 1
--cap 128MB --read-back 4000`` unless given, and 2 s for the other
client.  The table (stdout, and ``--output``) gives per server the calls
sent, how the run ended, the resident memory's growth at its highest and
the peak's, whether the other client was served, and the replies read
back, with the machine and the load average.  The exit status is 1 if our
server did not keep its promise: its growth reached the cap, the other
client was not served or a reply came out of order.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zodbserver.units import parse_byte_size

ROOT = Path(__file__).resolve().parent.parent
# The server process and the raw client are the test suite's, in
# tests/support, as pytest finds them (pythonpath = ["tests"]).
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench.report import machine  # noqa: E402

from support.raw_client import PROMPTLY, RawClient  # noqa: E402
from support.server_processes import ServerProcess  # noqa: E402
from zodbserver.protocol import Reply  # noqa: E402

OURS = "ours"
ZEO = "zeo"
KINDS = (OURS, ZEO)
MB = 1024 * 1024
MAXTID = b"\x7f" + b"\xff" * 7
RECEIVE_BUFFER = 64 * 1024
SAMPLE_INTERVAL = 0.2
#: Growth in MB under which memory counts as unchanged while settling.
SETTLED_GROWTH = 1.0
CONNECT_TIMEOUT = 60.0
#: Seconds a read of the replies may wait for the next bytes.
READ_TIMEOUT = 60.0
QUICK = {
    "seconds": 4.0,
    "settle": 1.0,
    "cap": "128MB",
    "read_back": 4000,
    "bystander_timeout": 2.0,
}
DEFAULTS = {
    "seconds": 30.0,
    "settle": 5.0,
    "cap": "512MB",
    "read_back": 0,
    "bystander_timeout": PROMPTLY,
}


@dataclass
class Options:
    calls: int
    object_size: int
    seconds: float
    settle: float
    cap: int
    kinds: tuple[str, ...]
    #: Replies the client reads back before it leaves (0: every one).
    read_back: int
    #: How long another client waits for each step of its load.
    bystander_timeout: float
    directory: Path | None
    output: Path | None
    quick: bool


@dataclass
class Sample:
    kind: str
    sends: int
    calls_sent: int
    ended: str
    seconds: float
    rss_before: int
    rss_growth: int
    peak_growth: int
    bystander_served: bool
    replies_read: int | None
    replies_in_order: bool | None

    @property
    def kept_its_promise(self) -> bool:
        """Bounded memory, the others served, every reply in order."""
        return (
            self.ended != "cap"
            and self.bystander_served
            and self.replies_in_order is not False
        )


def commit_object(address: tuple[str, int], size: int) -> bytes:
    """One new object of ``size`` random bytes; its oid."""
    from ZEO.ClientStorage import ClientStorage
    from ZODB.Connection import TransactionMetaData
    from ZODB.tests.MinPO import MinPO
    from ZODB.tests.StorageTestBase import zodb_pickle
    from ZODB.utils import z64

    storage = ClientStorage(address, wait_timeout=CONNECT_TIMEOUT, cache_size=MB)
    try:
        oid: bytes = storage.new_oid()
        metadata = TransactionMetaData(description="the object loaded")
        storage.tpc_begin(metadata)
        storage.store(oid, z64, zodb_pickle(MinPO(os.urandom(size))), "", metadata)
        storage.tpc_vote(metadata)
        storage.tpc_finish(metadata)
    finally:
        storage.close()
    return oid


class Sender(threading.Thread):
    """Sends ``batch`` again and again until stopped or refused."""

    def __init__(self, sock: socket.socket, batch: bytes) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.batch = batch
        self.sends = 0
        self.last_send = time.monotonic()
        self.closed = False
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.sock.sendall(self.batch)
            except OSError:
                self.closed = True
                return
            self.sends += 1
            self.last_send = time.monotonic()


def registered(address: tuple[str, int], timeout: float = PROMPTLY) -> RawClient:
    client = RawClient(address, timeout=timeout)
    try:
        client.result("register", "1", False)
    except BaseException:
        client.close()
        raise
    return client


def measure(kind: str, directory: Path, options: Options) -> Sample:
    with ServerProcess(kind, directory) as server:
        address = server.start()
        oid = commit_object(address, options.object_size)
        hog = registered(address)
        try:
            return _pipeline(kind, server, hog, oid, options)
        finally:
            hog.close()


def _pipeline(
    kind: str, server: ServerProcess, hog: RawClient, oid: bytes, options: Options
) -> Sample:
    hog.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    hog.sock.settimeout(None)
    first = 1000
    batch = b"".join(
        hog.connection.call(msgid, "loadBefore", (oid, MAXTID))
        for msgid in range(first, first + options.calls)
    )
    rss_before = server.proc_status("VmRSS")
    peak_before = server.proc_status("VmHWM")
    highest = rss_before
    sender = Sender(hog.sock, batch)
    started = time.monotonic()
    samples = [(started, rss_before)]
    sender.start()
    ended = "seconds"
    while time.monotonic() - started < options.seconds:
        time.sleep(SAMPLE_INTERVAL)
        if not server.running:
            raise AssertionError(f"the {kind} server exited: {server.log()}")
        rss = server.proc_status("VmRSS")
        now = time.monotonic()
        samples.append((now, rss))
        highest = max(highest, rss)
        if sender.closed:
            ended = "closed"
            break
        if (highest - rss_before) * 1024 >= options.cap:
            ended = "cap"
            break
        if now - sender.last_send >= options.settle:
            recent = [value for at, value in samples if at >= now - options.settle]
            if (max(recent) - min(recent)) / 1024 < SETTLED_GROWTH:
                ended = "settled"
                break
    took = time.monotonic() - started
    peak_growth = server.proc_status("VmHWM") - peak_before
    sender.stop.set()
    bystander_served = _served(
        server.address, oid, options.object_size, options.bystander_timeout
    )
    replies_read: int | None = None
    in_order: bool | None = None
    if ended == "cap":
        # A server holding replies it cannot send is in no state to stop
        # when asked (ZEO 6 takes its time over the gigabytes).
        server.kill()
    if ended in ("cap", "closed"):
        hog.close()  # the sender, blocked or not, ends with an OSError
        sender.join(CONNECT_TIMEOUT)
    else:
        replies_read, in_order = _read_back(
            hog, sender, first, options.calls, options.read_back
        )
    return Sample(
        kind,
        sender.sends,
        sender.sends * options.calls,
        ended,
        took,
        rss_before * 1024,
        (highest - rss_before) * 1024,
        peak_growth * 1024,
        bystander_served,
        replies_read,
        in_order,
    )


def _served(address: tuple[str, int], oid: bytes, size: int, timeout: float) -> bool:
    """Whether another client gets the object, each wait within ``timeout``."""
    try:
        with registered(address, timeout) as bystander:
            data, _serial, _end = bystander.result("loadBefore", oid, MAXTID)
    except OSError:  # a timeout: the server is busy with the other client
        return False
    return len(data) > size


def _read_back(
    hog: RawClient, sender: Sender, first: int, calls: int, limit: int
) -> tuple[int, bool]:
    """Read every reply (or the first ``limit``); how many, and whether each
    came in the order sent.  The send under way, if any, completes as the
    server drains."""
    hog.sock.settimeout(READ_TIMEOUT)
    expected = first
    read = 0
    in_order = True
    while (sender.is_alive() or read < sender.sends * calls) and (
        not limit or read < limit
    ):
        event = hog.next_event()
        if not isinstance(event, Reply):
            raise AssertionError(f"after {read} replies: {event!r}")
        in_order = in_order and event.msgid == expected
        read += 1
        expected = first + read % calls
    return read, in_order


def parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m stress.pipelining_client",
        description="A client that pipelines loadBefore and never reads: "
        "the server's memory, zodbserver against ZEO 6.",
    )
    parser.add_argument("--calls", type=int, default=2000, help="calls per send")
    parser.add_argument(
        "--object-size", default="100KB", help="the object loaded (default 100KB)"
    )
    parser.add_argument("--seconds", type=float, help="the longest run, each server")
    parser.add_argument("--settle", type=float, help="seconds without a send")
    parser.add_argument("--cap", help="growth that ends a run (default 512MB)")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="servers to run (ours,zeo)"
    )
    parser.add_argument(
        "--read-back",
        type=int,
        help="replies read before leaving (default: every one; --quick 4000)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short run: --seconds 4 --settle 1 --cap 128MB --read-back 4000 "
        "unless given",
    )
    parser.add_argument(
        "--directory", type=Path, help="where the storages go (default: tmp)"
    )
    parser.add_argument("--output", type=Path, help="also write the table here")
    arguments = parser.parse_args(argv)
    kinds = tuple(kind for kind in arguments.kinds.split(",") if kind)
    if set(kinds) - set(KINDS) or not kinds:
        parser.error(f"--kinds: choose among {', '.join(KINDS)}")
    if arguments.calls < 1:
        parser.error("--calls must be positive")
    defaults = QUICK if arguments.quick else DEFAULTS

    def given(name: str) -> Any:
        value = getattr(arguments, name)
        return defaults[name] if value is None else value

    return Options(
        calls=arguments.calls,
        object_size=parse_byte_size(arguments.object_size),
        seconds=float(given("seconds")),
        settle=float(given("settle")),
        cap=parse_byte_size(str(given("cap"))),
        kinds=kinds,
        read_back=int(given("read_back")),
        bystander_timeout=float(defaults["bystander_timeout"]),
        directory=arguments.directory,
        output=arguments.output,
        quick=arguments.quick,
    )


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def report(samples: list[Sample], options: Options, before: str, after: str) -> str:
    details = machine()
    lines = [
        "## A client that pipelines loadBefore and never reads",
        "",
        f"`loadBefore` of one object of {options.object_size / 1024:g} KB, "
        f"{options.calls} calls per send, the replies never read, for at most "
        f"{options.seconds:g} s (settled: no send for {options.settle:g} s; "
        f"cap: {options.cap / MB:g} MB of growth).  Servers at their default "
        "settings.",
        "",
        f"processors: {details['cores']} ({details['cpu_model']}), "
        f"memory: {details['ram_gib']} GiB",
        f"{details['python']}, {details['os']}",
        f"load average (1, 5, 15 min): before {before}, after {after}",
        "",
        "| server | sends | calls sent | replies asked MB | ended | s "
        "| VmRSS before MB | VmRSS growth MB | VmHWM growth MB "
        "| other client served | replies read back |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for sample in samples:
        asked = sample.calls_sent * options.object_size / MB
        if sample.replies_read is None:
            read_back = f"not read ({sample.ended})"
        else:
            order = "in order" if sample.replies_in_order else "OUT OF ORDER"
            read_back = f"{sample.replies_read}, {order}"
        lines.append(
            f"| {sample.kind} | {sample.sends} | {sample.calls_sent} "
            f"| {asked:.0f} | {sample.ended} | {sample.seconds:.1f} "
            f"| {sample.rss_before / MB:.0f} | {sample.rss_growth / MB:.1f} "
            f"| {sample.peak_growth / MB:.1f} "
            f"| {'yes' if sample.bystander_served else 'NO'} | {read_back} |"
        )
    return "\n".join(lines) + "\n"


def run(options: Options) -> tuple[list[Sample], str]:
    parent = tempfile.mkdtemp(prefix="pipelining-", dir=options.directory)
    try:
        before = load()
        samples = []
        for kind in options.kinds:
            directory = Path(parent) / kind
            directory.mkdir()
            print(f"{kind} ...", file=sys.stderr, flush=True)
            sample = measure(kind, directory, options)
            print(
                f"{kind}: {sample.ended} after {sample.seconds:.1f} s, "
                f"VmRSS +{sample.rss_growth / MB:.1f} MB",
                file=sys.stderr,
                flush=True,
            )
            samples.append(sample)
            shutil.rmtree(directory)
        return samples, report(samples, options, before, load())
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    samples, table = run(options)
    print(table, end="")
    if options.output is not None:
        options.output.write_text(table)
    return 0 if all(s.kept_its_promise for s in samples if s.kind == OURS) else 1


if __name__ == "__main__":
    sys.exit(main())
