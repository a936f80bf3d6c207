"""Clients carry on through server crashes: two SIGKILLs in a row.

The sequence that used to stall our client for good: the server is killed
between a transaction's vote and its finish; a ZEO server then comes back
reporting that never-finished transaction's tid as its last (FileStorage
takes it from the file before truncating it), and a client that reads
anything takes that phantom as its cache's last tid.  Killed once more
before anyone commits, the server comes back with the real, lower last tid:
a client that refuses a server "behind its cache" never reconnects.  Every
client must instead be committing again within seconds.  Our server never
reports the phantom (``server/recovery.py``); both servers are run, with
both clients, in separate processes on one fixed port.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import transaction
import ZEO
from ZODB.POSException import ConflictError

import zodbserver
from support.server_processes import (
    KINDS,
    ServerProcess,
    last_transaction,
    vote_then_kill,
)
from support.waiting import wait_until

#: Long enough for a restart and a reconnection on a loaded machine.
RECOVERY = 60.0


def open_db(kind: str, address: tuple[str, int]) -> Any:
    options: dict[str, Any] = dict(
        wait_timeout=RECOVERY, min_disconnect_poll=0.1, max_disconnect_poll=1.0
    )
    if kind == "zeo":
        return ZEO.DB(address, **options)
    return zodbserver.DB(address, **options)


def commit(db: Any, value: str) -> bytes:
    """Set the root's value; the committed tid."""
    with db.transaction() as connection:
        connection.root()["value"] = value
    tid: bytes = db.storage.lastTransaction()
    return tid


def commit_eventually(db: Any, value: str) -> bytes:
    """Commit, retrying what a web application retries (disconnects and
    conflicts) until ``RECOVERY`` seconds have passed."""
    deadline = time.monotonic() + RECOVERY
    while True:
        try:
            return commit(db, value)
        except (
            ConflictError,
            zodbserver.ClientDisconnected,
            ZEO.Exceptions.ClientDisconnected,
        ):
            transaction.abort()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_value(db: Any) -> Any:
    with db.transaction() as connection:
        return connection.root().get("value")


@pytest.mark.parametrize("client_kind", KINDS)
@pytest.mark.parametrize("server_kind", KINDS)
def test_a_writer_carries_on_after_two_crashes_in_a_row(
    server_kind: str, client_kind: str, tmp_path: Path
) -> None:
    server = ServerProcess(server_kind, tmp_path)
    with server:
        server.start()
        db = open_db(client_kind, server.address)
        try:
            acknowledged = commit(db, "before the crashes")
            vote_then_kill(server)

            server.start()
            reported = last_transaction(server.address)
            if server_kind == "ours":
                assert reported == acknowledged
            else:  # ZEO reports the transaction that was never finished
                assert reported > acknowledged
            wait_until(db.storage.is_connected, "the client", timeout=RECOVERY)
            # Our client now takes the phantom as its cache's last tid, ZEO's
            # the tid getInvalidations names.
            assert db.storage.lastTransaction() in (reported, acknowledged)
            db.cacheMinimize()
            assert read_value(db) == "before the crashes"  # cached again

            server.kill()  # before anyone commits
            server.start()
            assert last_transaction(server.address) == acknowledged
            tid = commit_eventually(db, "after the crashes")
            assert tid > acknowledged
            assert read_value(db) == "after the crashes"
        finally:
            db.close()
