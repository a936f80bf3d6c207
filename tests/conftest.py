"""Fixtures any test package may use, and the ``--long`` option.

ZODB and ZEO mark some of the tests they ship as long (``level`` 2: ZODB's
race between disconnects and invalidations, 15-35 s each); their own test
runner leaves those out unless asked.  Here they run in the classes that
set ``long_tests = True`` (one for each client and server pairing: ZEO's
client and ours against our server, and ours on RelStorage), and in every
class with ``--long``.  The others are deselected, not skipped.

The garbage is collected at the end of each module: an object its tests
left unclosed (a file, a socket) then fails that module's last test, at its
teardown, with the ResourceWarning, whatever else ran in the same process
(the suite runs in several, ``run-tests``) -- not a later test that
happened to trigger the collection.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from support.postgres import PostgresServer


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        help="run ZODB's and ZEO's long tests in every class that has them",
    )


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    if config.getoption("--long"):
        return
    kept, long_ones = [], []
    for item in items:
        is_long = getattr(getattr(item, "obj", None), "level", 1) >= 2
        wanted = getattr(getattr(item, "cls", None), "long_tests", False)
        (long_ones if is_long and not wanted else kept).append(item)
    if long_ones:
        config.hook.pytest_deselected(items=long_ones)
        items[:] = kept


@pytest.fixture(scope="module", autouse=True)
def _collect_garbage_after_the_module() -> Iterator[None]:
    yield
    gc.collect()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole run, started on first use."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()
