"""A benchmark worker process: ``python -m bench.worker MODE KIND TARGET INDEX``.

``commit``: open a client, commit once to warm up, print ``READY``; on
``GO SECONDS`` commit one-object transactions (worker ``INDEX`` increments
its own counter, so workers never conflict) for that long and print
``RESULT {"latencies": [...]}`` (seconds per commit).
``hold``: open a client, read every object of ``objects``, print ``READY``
and stay connected until stdin says anything or closes.

``TARGET`` is JSON: a server address, or ``[path, blob_dir]`` for a
FileStorage.  A worker kills itself after ``LIFETIME`` seconds whatever
happens, so an orphan never outlives the benchmark for long.
"""

from __future__ import annotations

import json
import signal
import sys
import time

import transaction
import ZODB

from .clients import open_storage

LIFETIME = 600


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
    conn.close()
    print("RESULT", json.dumps({"latencies": latencies}), flush=True)


def hold(db: ZODB.DB) -> None:
    conn = db.open()
    for item in conn.root()["objects"].values():
        item["payload"]
    print("READY", flush=True)
    sys.stdin.readline()
    conn.close()


def main(argv: list[str]) -> int:
    mode, kind, target, index = argv[0], argv[1], json.loads(argv[2]), int(argv[3])
    signal.alarm(LIFETIME)
    db = ZODB.DB(open_storage(kind, target))
    try:
        if mode == "commit":
            commit_loop(db, index)
        elif mode == "hold":
            hold(db)
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
