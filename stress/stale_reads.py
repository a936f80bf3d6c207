"""Stale reads right after another client's commit: our client against ZEO's.

A ZODB client learns of other clients' commits from the invalidations the
server sends when a commit finishes.  A transaction that begins on client B
right after client A's commit returned may begin before B has processed
that invalidation, and read the state before the commit.  This counts how
often that happens::

    .venv/bin/python -m stress.stale_reads [--rounds 300] [--busy 0,1,3]
        [--output FILE]

One server (ours, ``--server zeo`` for ZEO 6's) serves a writer process
and a reader (this process).  Each round the reader asks the writer, over
a pipe, to commit a new value; the writer commits it (ZEO's client) and
answers once ``commit()`` returned; the reader then at once begins a new
transaction on its open connection and reads the value.  A read of the
value before is stale.  The reader's client is ours or ZEO's, without and
with ``server_sync``; ``--busy N`` runs N threads in the reader that keep
the interpreter busy in Python, as a Plone instance's request threads do
(the client's connection thread must win the GIL from them to process the
invalidation).  The report is the stale fraction of each combination and
the reader's median read time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from support.server_processes import ServerProcess  # noqa: E402

CLIENTS = ("ours", "zeo")


def open_db(kind: str, address: tuple[str, int], server_sync: bool = False) -> Any:
    import ZODB

    if kind == "zeo":
        import ZEO.ClientStorage

        storage: Any = ZEO.ClientStorage.ClientStorage(
            address, wait_timeout=30, server_sync=server_sync
        )
    else:
        from zodbserver import ClientStorage

        storage = ClientStorage(address, wait_timeout=30, server_sync=server_sync)
    return ZODB.DB(storage)


def writer(address: tuple[str, int], pipe: Connection) -> None:
    """Commit each value the reader sends; answer once the commit returned."""
    db = open_db("zeo", address)
    try:
        while (value := pipe.recv()) is not None:
            with db.transaction() as connection:
                connection.root()["value"] = value
            pipe.send(value)
    finally:
        db.close()


def busy(stop: threading.Event) -> None:
    """Pure-Python work, as a request thread rendering a page does."""
    while not stop.is_set():
        total = 0
        for number in range(2000):
            total += number * number


def measure(
    kind: str,
    address: tuple[str, int],
    pipe: Connection,
    *,
    server_sync: bool,
    busy_threads: int,
    rounds: int,
    first_value: int,
) -> tuple[float, float]:
    """The stale fraction and the median read time (ms) of ``rounds``."""
    import transaction

    db = open_db(kind, address, server_sync)
    manager = transaction.TransactionManager()
    connection = db.open(manager)
    stop = threading.Event()
    threads = [threading.Thread(target=busy, args=(stop,)) for _ in range(busy_threads)]
    for thread in threads:
        thread.start()
    stale = 0
    times = []
    try:
        for value in range(first_value, first_value + rounds):
            pipe.send(value)
            assert pipe.recv() == value
            started = time.perf_counter()
            manager.begin()
            seen = connection.root().get("value")
            times.append(time.perf_counter() - started)
            manager.abort()
            if seen != value:
                stale += 1
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        connection.close()
        db.close()
    return stale / rounds, statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stress.stale_reads", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--busy", default="0,1,3", help="busy threads, a list")
    parser.add_argument("--server", choices=("ours", "zeo"), default="ours")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    busy_levels = [int(level) for level in args.busy.split(",")]
    context = multiprocessing.get_context("spawn")
    lines = [
        f"# Stale reads after another client's commit ({args.server} server)",
        "",
        f"{args.rounds} rounds each; the writer is ZEO 6's client.",
        "",
        "| reader client | server_sync | busy threads | stale | median read ms |",
        "|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as directory:
        server = ServerProcess(args.server, Path(directory))
        address = server.start()
        ours, theirs = context.Pipe()
        process = context.Process(target=writer, args=(address, theirs))
        process.start()
        try:
            value = 1
            for busy_threads in busy_levels:
                for kind in CLIENTS:
                    for server_sync in (False, True):
                        stale, median = measure(
                            kind,
                            address,
                            ours,
                            server_sync=server_sync,
                            busy_threads=busy_threads,
                            rounds=args.rounds,
                            first_value=value,
                        )
                        value += args.rounds
                        line = (
                            f"| {kind} | {server_sync} | {busy_threads} | "
                            f"{stale:.1%} | {median:.3f} |"
                        )
                        lines.append(line)
                        print(line, flush=True)
        finally:
            ours.send(None)
            process.join(60)
            server.stop()
    report = "\n".join(lines) + "\n"
    if args.output is not None:
        args.output.write_text(report)
    else:
        print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
