"""ZEO 6's own test classes against our server, every transaction spooled.

The same classes as ``test_zeo_suites`` (ZEO's client and tests, unchanged,
our server in a thread), with ``transaction-spool-threshold 1`` in the
server's ``<zeo>`` section: every transaction with at least one operation
goes to a spool file at its first, and its vote replays that file.  So
these check that a replay from the file keeps the order and the meaning of
the operations: stores, read checks, undos, restores (``RecoveryStorage``),
blob stores, and the votes after client-side conflict resolution, which
replay one file twice.  Only a subset runs: one FileStorage class (msgpack),
blobs, MappingStorage (spooling in the temporary directory) and the
conflict-resolution and recovery classes -- without ZODB's ``RaceTests``,
which time loads against invalidations (not the replay) and run in
``test_zeo_suites``.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import test_zeo_suites as zeo_suites
import zope.testing.setupstack
from ZEO.ClientStorage import ClientStorage
from ZEO.tests import forker, testZEO
from ZODB.Connection import TransactionMetaData
from ZODB.tests.racetest import RaceTests
from ZODB.utils import z64

pytestmark = zeo_suites.pytestmark

SPOOL_EVERYTHING = "transaction-spool-threshold 1"


def start_spooling_server(
    storage_conf: str | None = None,
    zeo_conf: Any = None,
    port: Any = None,
    **options: Any,
) -> tuple[Any, Callable[[], None]]:
    """``zeo_suites.start_our_server``, with the threshold in ``<zeo>``."""
    if zeo_conf is None or isinstance(zeo_conf, dict):
        address = ("127.0.0.1", port or 0) if not isinstance(port, str) else port
        zeo_conf = forker.ZEOConfig(address, **(zeo_conf or {}))
    text = str(zeo_conf)
    assert text.count("</zeo>") == 1, text
    text = text.replace("</zeo>", f"{SPOOL_EVERYTHING}\n</zeo>")
    return zeo_suites.start_our_server(storage_conf, text, port, **options)


@contextlib.contextmanager
def spooling_server_in_forker() -> Iterator[None]:
    original = forker.start_zeo_server

    def start(*args: Any, **kwargs: Any) -> tuple[Any, Callable[[], None]]:
        kwargs.pop("msgpack", None)
        return start_spooling_server(*args, **kwargs)

    forker.start_zeo_server = start
    try:
        yield
    finally:
        forker.start_zeo_server = original


def spool_files(directory: str) -> list[str]:
    pattern = os.path.join(glob.escape(directory), "**", ".zodbserver-txn-*")
    return glob.glob(pattern, recursive=True)


def spooled_checks(cls: type) -> type:
    """``zeo_suites.zeo_checks``, less ZODB's race tests."""
    for name in dir(RaceTests):
        if name.startswith("test_"):
            setattr(cls, name, None)  # unittest collects callables only
    return zeo_suites.zeo_checks(cls)


class SpoolingServer:
    """Mixed in before a ZEO test class: its servers are ours, spooling.

    Every spool file is in the test's directory (ZODB's test set-up makes
    it the temporary directory too); once the test's servers have stopped,
    none may be left.
    """

    def setUp(self) -> None:
        with spooling_server_in_forker():
            super().setUp()  # type: ignore[misc]
        directory = os.getcwd()
        self._spools_left: list[str] = []
        # Runs after ZEO's tearDown stopped the servers, before the
        # directory is removed.
        zope.testing.setupstack.register(
            self, lambda: self._spools_left.extend(spool_files(directory))
        )

    def tearDown(self) -> None:
        super().tearDown()  # type: ignore[misc]
        assert self._spools_left == []


def test_the_threshold_reaches_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``<zeo>`` line is read: a server started this way spools."""
    monkeypatch.chdir(tmp_path)  # where the configuration file goes
    path = tmp_path / "Data.fs"
    address, stop = start_spooling_server(f"<filestorage>\npath {path}\n</filestorage>")
    try:
        client = ClientStorage(address, wait_timeout=10)
        try:
            metadata = TransactionMetaData()
            client.tpc_begin(metadata)
            client.store(client.new_oid(), z64, b"data", "", metadata)
            client.tpc_vote(metadata)  # the store has arrived
            assert len(list(tmp_path.glob(".zodbserver-txn-Data.fs-*"))) == 1
            client.tpc_finish(metadata)
            assert list(tmp_path.glob(".zodbserver-txn-*")) == []
        finally:
            client.close()
    finally:
        stop()


@spooled_checks
class TestSpooledFileStorage(
    SpoolingServer, testZEO.FileStorageTests, zeo_suites._WithHistory
):
    pass


@spooled_checks
class TestSpooledBlobAdaptedFileStorage(
    SpoolingServer, testZEO.BlobAdaptedFileStorageTests
):
    pass


@spooled_checks
class TestSpooledMappingStorage(SpoolingServer, testZEO.MappingStorageTests):
    pass


@spooled_checks
class TestSpooledClientConflictResolution(
    SpoolingServer, testZEO.ClientConflictResolutionTests
):
    pass


@spooled_checks
class TestSpooledFileStorageRecovery(SpoolingServer, testZEO.FileStorageRecoveryTests):
    pass
