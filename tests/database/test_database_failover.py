"""PostgreSQL fails over under our server: a primary with a synchronous
streaming standby; the primary is killed and the standby promoted.

The server's ``dsn`` names both hosts with ``target_session_attrs=
read-write``, as a libpq client of a failover pair does: it finds the new
primary by itself, and every commit it acknowledged before the failure is
there (docs/database.md, PostgreSQL failover).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import transaction
from persistent.mapping import PersistentMapping

from support.database import RelStorageServers, new_database
from support.postgres import PostgresServer
from support.waiting import wait_until

STANDBY = "standby1"
BEFORE, AFTER = 50, 50
DEADLINE = 120.0


@pytest.fixture
def pair() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    primary = PostgresServer()
    standby = None
    try:
        primary.start()
        standby = PostgresServer(standby_of=primary, standby_name=STANDBY)
        standby.start()
        yield primary, standby
    finally:
        if standby is not None:
            standby.remove()
        primary.remove()


def _synchronous(primary: PostgresServer) -> None:
    """From now on the primary acknowledges a commit once the standby has it."""
    primary.query(f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY}'")
    primary.query("SELECT pg_reload_conf()")
    wait_until(
        lambda: primary.query(
            f"SELECT 1 FROM pg_stat_replication WHERE application_name = "
            f"'{STANDBY}' AND sync_state = 'sync'"
        ),
        timeout=30,
        what="the standby to replicate synchronously",
    )


def test_acknowledged_commits_survive_a_failover(
    pair: tuple[PostgresServer, PostgresServer], tmp_path: Path
) -> None:
    """Commits go on through the promoted standby (those in flight when the
    primary dies may fail: their clients retry), and the counter holds
    every acknowledged increment."""
    primary, standby = pair
    database = new_database(primary)
    wait_until(
        lambda: standby.query(
            f"SELECT 1 FROM pg_database WHERE datname = '{database}'"
        ),
        timeout=30,
        what="the standby to have the database",
    )
    _synchronous(primary)
    servers = RelStorageServers(primary, tmp_path)
    servers.database = database
    servers.dsn = (
        f"dbname={database} user=zodb host={primary.socket_dir},"
        f"{standby.socket_dir} target_session_attrs=read-write"
    )
    try:
        address = servers.start()
        db = servers.db(address)
        with db.transaction() as connection:
            connection.root()["counter"] = PersistentMapping(n=0)
        progress = _Progress()
        writer = threading.Thread(target=_commit, args=(db, BEFORE + AFTER, progress))
        writer.start()
        try:
            wait_until(
                lambda: progress.acknowledged >= BEFORE,
                timeout=60,
                what="commits before the failover",
            )
            primary.kill()  # while the writer commits
            standby.query("SELECT pg_promote()")
        finally:
            writer.join(DEADLINE + 10)
        assert progress.acknowledged == BEFORE + AFTER, progress.errors[-5:]
        assert standby.query("SELECT pg_is_in_recovery()") == [(False,)]
        reader = servers.db(address)
        reader.storage.sync()
        with reader.transaction() as connection:
            value = connection.root()["counter"]["n"]
        assert progress.acknowledged <= value
        assert value <= progress.acknowledged + progress.failed
    finally:
        servers.stop_all()


class _Progress:
    """What the writer has done so far."""

    def __init__(self) -> None:
        self.acknowledged = 0
        #: Commits that raised: their outcome is unknown.
        self.failed = 0
        self.errors: list[str] = []


def _commit(db: Any, wanted: int, progress: _Progress) -> None:
    """Increment the counter until ``wanted`` commits are acknowledged,
    retrying after failures."""
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    deadline = time.monotonic() + DEADLINE
    try:
        while progress.acknowledged < wanted and time.monotonic() < deadline:
            try:
                connection.root()["counter"]["n"] += 1
                manager.commit()
            except Exception as error:  # the database's, while it fails over
                manager.abort()
                progress.failed += 1
                progress.errors.append(f"{type(error).__name__}: {error}")
                time.sleep(0.2)
            else:
                progress.acknowledged += 1
    finally:
        connection.close()
