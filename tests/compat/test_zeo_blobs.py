"""ZODB's reusable blob suite run by ZEO 6's ClientStorage against our
server, with blobs streamed over the connection and in a shared directory,
in both wire encodings."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from ZEO.ClientStorage import ClientStorage
from ZODB.FileStorage import FileStorage
from ZODB.tests import testblob

from support.suites import run_suite, select
from support.users import run_as_nobody
from zodbserver.server.thread import ServerThread


def _storage_factory(msgpack: bool, shared: bool) -> Callable[[str, str], Any]:
    class ServerManagingClientStorage(ClientStorage):  # type: ignore[misc]
        def __init__(self, name: str, blob_dir: str) -> None:
            # Absolute: the server shares this process's cwd, which one of
            # the doctests changes.
            server_blob_dir = os.path.abspath(
                blob_dir if shared else "server-" + blob_dir
            )
            storage = FileStorage(
                os.path.abspath(f"{name}.fs"), blob_dir=server_blob_dir
            )
            self._our_server = ServerThread({"1": storage}, msgpack=msgpack)
            address = self._our_server.start()
            super().__init__(
                address, blob_dir=blob_dir, shared_blob_dir=shared, wait_timeout=10
            )

        def close(self) -> None:
            super().close()
            server, self._our_server = self._our_server, None
            if server is not None:
                server.stop()

    return ServerManagingClientStorage


#: Checks that a committed blob file cannot be opened for writing, which
#: root can do whatever the mode bits say: run as ``nobody`` under root.
AS_A_USER = "blob_transaction.txt"


@pytest.mark.parametrize("shared", [False, True], ids=["streamed", "shared"])
@pytest.mark.parametrize("msgpack", [True, False], ids=["M5", "Z5"])
def test_zodb_blob_suite_with_zeo_client(
    msgpack: bool, shared: bool, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    suite = testblob.storage_reusable_suite(
        f"ZEOClient{msgpack}{shared}", _storage_factory(msgpack, shared)
    )
    failure = run_suite(select(suite, AS_A_USER, keep=False))
    assert failure is None, failure


@pytest.mark.parametrize("shared", [False, True], ids=["streamed", "shared"])
@pytest.mark.parametrize("msgpack", [True, False], ids=["M5", "Z5"])
def test_blob_transaction_doctest_with_zeo_client(
    msgpack: bool, shared: bool, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    suite = testblob.storage_reusable_suite(
        f"ZEOClient{msgpack}{shared}", _storage_factory(msgpack, shared)
    )
    only = select(suite, AS_A_USER, keep=True)
    if os.geteuid() == 0:
        run_as_nobody(lambda: run_suite(only))
    else:
        failure = run_suite(only)
        assert failure is None, failure
