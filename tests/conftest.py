"""Fixtures any test package may use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.postgres import PostgresServer


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole run, started on first use."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()
