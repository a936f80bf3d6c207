"""A database per test on the session's PostgreSQL server (``postgres``,
tests/conftest.py), and our servers on RelStorage over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.database import RelStorageServers
from support.postgres import PostgresServer


@pytest.fixture(params=["history-preserving", "history-free"])
def keep_history(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "history-preserving")


@pytest.fixture
def servers(
    postgres: PostgresServer, tmp_path: Path, keep_history: bool
) -> Iterator[RelStorageServers]:
    """Our servers on one new database: ``servers.start()`` adds one."""
    group = RelStorageServers(postgres, tmp_path, keep_history=keep_history)
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture
def hp_servers(postgres: PostgresServer, tmp_path: Path) -> Iterator[RelStorageServers]:
    """As ``servers``, history-preserving only."""
    group = RelStorageServers(postgres, tmp_path, keep_history=True)
    try:
        yield group
    finally:
        group.stop_all()
