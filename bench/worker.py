"""A benchmark worker process: ``python -m bench.worker MODE KIND TARGET INDEX [ARG]``.

``commit``: open a client, commit once to warm up, print ``READY``; on
``GO SECONDS`` commit one-object transactions (worker ``INDEX`` increments
its own counter, so workers never conflict) for that long and print
``RESULT {"latencies": [...], "last_tid": HEX}`` (seconds per commit, the
tid of the last commit).
``hold``: open a client, read every object of ``objects``, print ``READY``
and stay connected until stdin says anything or closes.
``listen``: open ``ARG`` clients, each with its own ``ZODB.DB`` and an open
connection holding counter ``INDEX`` (so a commit of it invalidates every
one of their caches), print ``READY``; on ``WAIT HEX SECONDS`` wait until
every client has seen tid ``HEX`` and print ``CAUGHT``; stop when stdin
closes.
``read``: open a client (empty cache), print ``READY``; on ``GO`` call
``loadBefore`` once for each oid of the JSON file ``ARG`` (hex strings) and
print ``RESULT {"latencies": [...], "start": T, "end": T}`` (``T`` on the
system-wide monotonic clock, so several readers' spans can be joined).
``watch``: open a client whose ``ZODB.DB`` notes, on the monotonic clock,
when each invalidation reaches it; with ``ARG`` ``busy`` a second thread
keeps the interpreter busy in Python meanwhile (an application thread
rendering pages); print ``READY``; on ``DONE HEX`` wait for tid ``HEX``
and print ``RESULT {HEX tid: T}``.
``see``: open a client with a connection holding counter 0, print
``READY``; on ``UNTIL N`` print ``WATCHING`` and begin a transaction every
``SEE_PAUSE`` seconds, reading the counter, until it reads ``N``; print
``RESULT {n: T}``, the moment each value of the counter was first visible
(a value skipped over became visible with the one read).  Unlike
``watch`` it needs no invalidation hook, so it works on RelStorage, which
learns of changes when a transaction begins.
``idle``: open a client with a connection, print ``READY`` and begin a
transaction every ``ARG`` seconds, reading counter ``INDEX``, as a Zope
worker's periodic task does, until stdin says anything or closes.

``TARGET`` is JSON: a server address, or ``[path, blob_dir]`` for a
FileStorage.  ``KIND`` ``echo``: ``commit``, ``listen`` and ``read``
against ``bench.echo``'s server, the floor (raw sockets, no storage).
A worker kills itself after ``LIFETIME`` seconds whatever happens, so an
orphan never outlives the benchmark for long.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any

import transaction
import ZODB
from ZODB.utils import p64, u64

from .clients import open_storage

LIFETIME = 600
#: Seconds between two looks at the clients' last tids while waiting.
POLL = 0.005
#: Seconds ``see`` sleeps between two transactions.
SEE_PAUSE = 0.001
#: Seconds ``see`` waits for the value it was told to wait for.
SEE_TIMEOUT = 60.0


def commit_loop(db: ZODB.DB, index: int) -> None:
    manager = transaction.TransactionManager()
    conn = db.open(transaction_manager=manager)
    counter = conn.root()["counters"][index]
    counter["n"] += 1
    manager.commit()
    print("READY", flush=True)
    command = sys.stdin.readline().split()
    if not command or command[0] != "GO":
        return
    duration = float(command[1])
    latencies = []
    deadline = time.perf_counter() + duration
    while True:
        start = time.perf_counter()
        if start >= deadline:
            break
        counter["n"] += 1
        manager.commit()
        latencies.append(time.perf_counter() - start)
    last_tid = counter._p_serial.hex()
    conn.close()
    print("RESULT", json.dumps({"latencies": latencies, "last_tid": last_tid}))
    sys.stdout.flush()


def hold(db: ZODB.DB) -> None:
    conn = db.open()
    for item in conn.root()["objects"].values():
        item["payload"]
    print("READY", flush=True)
    sys.stdin.readline()
    conn.close()


def listen(kind: str, target: Any, index: int, clients: int) -> None:
    dbs = []
    try:
        for _ in range(clients):
            db = ZODB.DB(open_storage(kind, target))
            dbs.append(db)
            conn = db.open()
            conn.root()["counters"][index]["n"]  # in the caches, and kept open
        print("READY", flush=True)
        while command := sys.stdin.readline().split():
            if command[0] == "WAIT":
                storages = [db.storage for db in dbs]
                wait_for(storages, bytes.fromhex(command[1]), float(command[2]))
    finally:
        for db in dbs:
            db.close()


def read(db: ZODB.DB, oid_file: str) -> None:
    with open(oid_file) as file:
        oids = [bytes.fromhex(oid) for oid in json.load(file)]
    storage = db.storage
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "GO":
        return
    before = p64(u64(storage.lastTransaction()) + 1)
    latencies = []
    begin = time.perf_counter()
    for oid in oids:
        start = time.perf_counter()
        found = storage.loadBefore(oid, before)
        latencies.append(time.perf_counter() - start)
        assert found is not None, oid
    end = time.perf_counter()
    result = {"latencies": latencies, "start": begin, "end": end}
    print("RESULT", json.dumps(result), flush=True)


def busy_python(stop: threading.Event) -> None:
    """Work in Python, holding the GIL as a page being rendered does."""
    while not stop.is_set():
        parts = [f"<td>{number}</td>" for number in range(200)]
        "".join(parts).upper()


def watch(db: ZODB.DB, busy: bool) -> None:
    seen: dict[bytes, float] = {}
    arrived = threading.Condition()
    adapter = db._mvcc_storage
    invalidate = adapter.invalidate

    def noting(tid: bytes, oids: Any) -> None:
        now = time.perf_counter()
        invalidate(tid, oids)
        with arrived:
            seen[tid] = now
            arrived.notify_all()

    adapter.invalidate = noting
    conn = db.open()
    conn.root()["counters"][0]["n"]
    stop = threading.Event()
    if busy:
        threading.Thread(target=busy_python, args=(stop,), daemon=True).start()
    print("READY", flush=True)
    command = sys.stdin.readline().split()
    if not command or command[0] != "DONE":
        return
    last = bytes.fromhex(command[1])
    with arrived:
        arrived.wait_for(lambda: last in seen, timeout=30)
    stop.set()
    with arrived:
        result = {tid.hex(): moment for tid, moment in seen.items()}
    print("RESULT", json.dumps(result), flush=True)
    conn.close()


def see(db: ZODB.DB) -> None:
    manager = transaction.TransactionManager()
    conn = db.open(transaction_manager=manager)
    counter = conn.root()["counters"][0]
    known = counter["n"]
    manager.abort()
    print("READY", flush=True)
    command = sys.stdin.readline().split()
    if not command or command[0] != "UNTIL":
        return
    last = int(command[1])
    seen: dict[int, float] = {}
    print("WATCHING", flush=True)
    deadline = time.monotonic() + SEE_TIMEOUT
    while known < last and time.monotonic() < deadline:
        manager.begin()
        value = counter["n"]
        now = time.perf_counter()
        manager.abort()
        for number in range(known + 1, value + 1):
            seen[number] = now
        known = max(known, value)
        time.sleep(SEE_PAUSE)
    conn.close()
    print("RESULT", json.dumps(seen), flush=True)


def idle(db: ZODB.DB, index: int, period: float) -> None:
    manager = transaction.TransactionManager()
    conn = db.open(transaction_manager=manager)
    conn.root()["counters"][index]["n"]
    manager.abort()
    stop = threading.Event()

    def wait_for_stdin() -> None:
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=wait_for_stdin, daemon=True).start()
    print("READY", flush=True)
    while not stop.wait(period):
        manager.begin()
        conn.root()["counters"][index]["n"]
        manager.abort()
    conn.close()


def echo_worker(mode: str, target: Any, extra: str) -> None:
    """The same modes against ``bench.echo``'s server: the floor."""
    from . import echo

    if mode == "listen":
        listeners = [echo.Listener(target) for _ in range(int(extra))]
        print("READY", flush=True)
        while command := sys.stdin.readline().split():
            wait_for(listeners, bytes.fromhex(command[1]), float(command[2]))
        return
    if mode == "read":
        with open(extra) as file:
            count = len(json.load(file))
    print("READY", flush=True)
    command = sys.stdin.readline().split()
    if not command or command[0] != "GO":
        return
    if mode == "commit":
        result = echo.commit_loop(target, float(command[1]))
    elif mode == "read":
        result = echo.read_loop(target, count)
    else:
        raise SystemExit(f"no mode {mode!r} against the echo server")
    print("RESULT", json.dumps(result), flush=True)


def wait_for(storages: list[Any], tid: bytes, timeout: float) -> None:
    """Print ``CAUGHT`` once every one of ``storages`` has seen ``tid``,
    ``LATE`` if that takes over ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while any(s.lastTransaction() < tid for s in storages):
        if time.monotonic() > deadline:
            print("LATE", flush=True)
            return
        time.sleep(POLL)
    print("CAUGHT", flush=True)


def main(argv: list[str]) -> int:
    mode, kind, target, index = argv[0], argv[1], json.loads(argv[2]), int(argv[3])
    extra = argv[4] if len(argv) > 4 else ""
    signal.alarm(LIFETIME)
    if kind == "echo":
        echo_worker(mode, target, extra)
        return 0
    if mode == "listen":
        listen(kind, target, index, int(extra))
        return 0
    db = ZODB.DB(open_storage(kind, target))
    try:
        if mode == "commit":
            commit_loop(db, index)
        elif mode == "hold":
            hold(db)
        elif mode == "read":
            read(db, extra)
        elif mode == "watch":
            watch(db, extra == "busy")
        elif mode == "see":
            see(db)
        elif mode == "idle":
            idle(db, index, float(extra))
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
