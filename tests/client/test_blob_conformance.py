"""ZODB's reusable blob suite (doctests and undo tests) with our client.

``storage_reusable_suite`` is a ``unittest`` suite of doctests; pytest does
not collect those, so each test here runs the whole suite and fails with
its report.  The storage factory starts a server per storage, as ZEO's own
``ServerManagingClientStorage`` does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from ZODB.tests import testblob

from support.suites import run_suite, select
from support.users import run_as_nobody
from zodbserver.client import ClientStorage

from .servers import BLOB_SERVERS


def _storage_factory(
    server_name: str, shared: bool, process: bool = True
) -> Callable[[str, str], Any]:
    start = BLOB_SERVERS[server_name]

    class ServerManagingClientStorage(ClientStorage):
        def __init__(self, name: str, blob_dir: str) -> None:
            server_blob_dir = blob_dir if shared else "server-" + blob_dir
            addr, stop = start(f"{name}.fs", blob_dir=server_blob_dir, process=process)
            self._stop_server = stop
            super().__init__(
                addr, blob_dir=blob_dir, shared_blob_dir=shared, wait_timeout=10
            )

        def close(self) -> None:
            super().close()
            stop, self._stop_server = self._stop_server, None
            if stop is not None:
                stop()

    return ServerManagingClientStorage


#: Checks that a committed blob file cannot be opened for writing, which
#: root can do whatever the mode bits say: run as ``nobody`` under root.
AS_A_USER = "blob_transaction.txt"


@pytest.mark.parametrize("shared", [False, True], ids=["private", "shared"])
@pytest.mark.parametrize("server_name", sorted(BLOB_SERVERS))
def test_zodb_blob_suite(server_name: str, shared: bool) -> None:
    suite = testblob.storage_reusable_suite(
        f"ClientStorage{server_name}", _storage_factory(server_name, shared)
    )
    failure = run_suite(select(suite, AS_A_USER, keep=False))
    assert failure is None, failure


@pytest.mark.parametrize("shared", [False, True], ids=["private", "shared"])
@pytest.mark.parametrize(
    # Not against ZEO's in-thread test server: started by a child running
    # as nobody, it needs files that nobody cannot read.
    "server_name",
    sorted(name for name in BLOB_SERVERS if name.startswith("ours")),
)
def test_blob_transaction_doctest(server_name: str, shared: bool) -> None:
    # A server in a thread: a child running as nobody may not be able to
    # start a new interpreter.
    suite = testblob.storage_reusable_suite(
        f"ClientStorage{server_name}",
        _storage_factory(server_name, shared, process=False),
    )
    only = select(suite, AS_A_USER, keep=True)
    if os.geteuid() == 0:
        run_as_nobody(lambda: run_suite(only), preload=("zodbserver.server.thread",))
    else:
        failure = run_suite(only)
        assert failure is None, failure
