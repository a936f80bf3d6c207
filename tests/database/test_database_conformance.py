"""The storage conformance suites through our server on RelStorage.

ZODB's mixins with our client (as ``tests/client/test_conformance.py`` runs
them on a FileStorage) and ZEO 6's own test classes with ZEO's client (as
``tests/compat/test_zeo_suites.py`` runs them), against our server serving
a RelStorage on a new PostgreSQL database per test, history-preserving and
history-free, with its blobs kept in the database.
"""

from __future__ import annotations

import os
import unittest
from collections.abc import Callable
from typing import Any

import pytest
from ZEO.tests import testZEO
from ZODB.tests import (
    BasicStorage,
    ConflictResolution,
    HistoryStorage,
    IteratorStorage,
    MTStorage,
    PackableStorage,
    PersistentStorage,
    ReadOnlyStorage,
    RevisionStorage,
    StorageTestBase,
    Synchronization,
    TransactionalUndoStorage,
    testblob,
)
from ZODB.TimeStamp import TimeStamp

from client.test_conformance import ClientStorageHarness
from compat import test_zeo_suites as zeo_suites
from compat.test_zeo_suites import OurServer, start_our_server, zeo_checks
from support.database import new_database
from support.postgres import PostgresServer
from support.suites import run_suite, select
from zodbserver.client import ClientStorage

# ZEO's client leaves the same warnings as against a FileStorage.
pytestmark = zeo_suites.pytestmark


class OnNewDatabase:
    """Gives each test a new database (``self.dsn``) on the session's
    PostgreSQL server, and its ``zeo.conf`` section (``relstorage_conf``)."""

    keep_history = True
    dsn = ""

    @pytest.fixture(autouse=True)
    def _new_database(self, postgres: PostgresServer) -> None:
        self.dsn = postgres.dsn(new_database(postgres, keep_history=self.keep_history))

    def relstorage_conf(self) -> str:
        return (
            "%import relstorage\n"
            "<relstorage 1>\n"
            f"  keep-history {'true' if self.keep_history else 'false'}\n"
            "  blob-dir blob-cache\n"
            "  shared-blob-dir false\n"
            f"  <postgresql>\n    dsn {self.dsn}\n  </postgresql>\n"
            "</relstorage>\n"
        )


class OurClientOnRelStorage(OnNewDatabase, ClientStorageHarness):
    def setUp(self) -> None:
        StorageTestBase.StorageTestBase.setUp(self)  # a temporary directory
        self._addr, self._stop_server = start_our_server(
            storage_conf=self.relstorage_conf()
        )
        self._clients = []
        self._storage = self._open_client()


def _relstorage_cannot(reason: str) -> Any:
    """A test RelStorage fails by itself, without our server (its own suite
    skips or replaces it): reported as skipped, with the reason."""

    def test(self: Any) -> None:
        raise unittest.SkipTest(f"RelStorage itself: {reason}")

    return test


class PackToTheLastTransaction:
    """ZODB's pack tests pack to ``time.time()`` right after their commits;
    RelStorage's tids may run ahead of the clock when commits come fast, so
    they pack to the time of the last transaction instead, as RelStorage's
    own suite does."""

    _storage: Any

    def _pack_to_last_transaction(self, test: Callable[[], None]) -> None:
        storage = self._storage
        pack = storage.pack

        def pack_to_last(t: float, referencesf: Any) -> None:
            last = TimeStamp(storage.lastTransaction()).timeTime()
            pack(max(t, last + 1e-3), referencesf)

        storage.pack = pack_to_last
        try:
            test()
        finally:
            del storage.pack

    def testPackUndoLog(self) -> None:  # noqa: N802 - ZODB's name
        # Pack to the first of its two transactions, as RelStorage's suite.
        firsts: list[bytes] = []
        dostore = self._dostoreNP

        def dostore_first(*args: Any, **kwargs: Any) -> Any:
            revid = dostore(*args, **kwargs)
            firsts.append(revid)
            return revid

        storage = self._storage
        pack = storage.pack

        def pack_to_first(t: float, referencesf: Any) -> None:
            pack(TimeStamp(firsts[0]).timeTime() + 1e-4, referencesf)

        self._dostoreNP = dostore_first
        storage.pack = pack_to_first
        try:
            super().testPackUndoLog()
        finally:
            del self._dostoreNP, storage.pack

    def testPackAllRevisions(self) -> None:  # noqa: N802 - ZODB's name
        self._pack_to_last_transaction(super().testPackAllRevisions)

    def testPackJustOldRevisions(self) -> None:  # noqa: N802 - ZODB's name
        self._pack_to_last_transaction(super().testPackJustOldRevisions)

    def testPackOnlyOneObject(self) -> None:  # noqa: N802 - ZODB's name
        self._pack_to_last_transaction(super().testPackOnlyOneObject)


class HistoryPreservingLimits:
    """What RelStorage does not do, whoever the client is."""

    # ZODB's names:
    _cannot_resolve_undo = _relstorage_cannot("no conflict-resolving undo")
    testUndoConflictResolution = _cannot_resolve_undo  # noqa: N815
    testUndoMultipleConflictResolution = _cannot_resolve_undo  # noqa: N815
    testUndoMultipleConflictResolutionReversed = _cannot_resolve_undo  # noqa: N815
    testTransactionalUndoIterator = _relstorage_cannot(  # noqa: N815
        "its iterator gives no backpointers (data_txn) for undone records"
    )


class HistoryFreeLimits:
    """What a history-free RelStorage does not do, whoever the client is."""

    # ZODB's names:
    _history_free_pack = _relstorage_cannot(
        "a history-free pack is garbage collection; its suite replaces these"
    )
    testPackAllRevisions = _history_free_pack  # noqa: N815
    testPackJustOldRevisions = _history_free_pack  # noqa: N815
    testPackOnlyOneObject = _history_free_pack  # noqa: N815
    _history_free_old_load = _relstorage_cannot(
        "history-free, a load in a snapshot older than the object's last "
        "change has no revision to read (ReadConflictError); its suite does "
        "not run ZODB's race tests"
    )
    test_race_external_invalidate_vs_disconnect = _history_free_old_load
    test_race_load_vs_external_invalidate = _history_free_old_load


class TestOurClientHistoryPreserving(
    HistoryPreservingLimits,
    PackToTheLastTransaction,
    OurClientOnRelStorage,
    BasicStorage.BasicStorage,
    HistoryStorage.HistoryStorage,
    IteratorStorage.IteratorStorage,
    IteratorStorage.ExtendedIteratorStorage,
    MTStorage.MTStorage,
    PackableStorage.PackableStorage,
    PackableStorage.PackableUndoStorage,
    PersistentStorage.PersistentStorage,
    ReadOnlyStorage.ReadOnlyStorage,
    RevisionStorage.RevisionStorage,
    Synchronization.SynchronizedStorage,
    TransactionalUndoStorage.TransactionalUndoStorage,
    ConflictResolution.ConflictResolvingStorage,
    ConflictResolution.ConflictResolvingTransUndoStorage,
):
    long_tests = True  # ZODB's long race test on RelStorage (tests/conftest.py)


class TestOurClientHistoryFree(
    HistoryFreeLimits,
    OurClientOnRelStorage,
    BasicStorage.BasicStorage,
    MTStorage.MTStorage,
    PackableStorage.PackableStorage,
    PersistentStorage.PersistentStorage,
    ReadOnlyStorage.ReadOnlyStorage,
    Synchronization.SynchronizedStorage,
    ConflictResolution.ConflictResolvingStorage,
):
    keep_history = False


class ZEOClientOnRelStorage(OnNewDatabase, OurServer):
    # ZODB's packs under concurrent writers (30-40 s each on RelStorage) run
    # through our client (TestOurClient*), against the same server code.
    testPackLotsWhileWriting = None  # noqa: N815 - ZODB's name
    testPackAfterUndoManyTimes = None  # noqa: N815 - ZODB's name

    def getConfig(self) -> str:  # noqa: N802 - ZEO's name
        return self.relstorage_conf()


@zeo_checks
class TestZEOClientHistoryPreserving(
    HistoryPreservingLimits,
    PackToTheLastTransaction,
    ZEOClientOnRelStorage,
    testZEO.FullGenericTests,
):
    pass


@zeo_checks
class TestZEOClientHistoryFree(
    HistoryFreeLimits, ZEOClientOnRelStorage, testZEO.GenericTests
):
    keep_history = False


@zeo_checks
class TestZEOClientBlobs(
    ZEOClientOnRelStorage, testZEO.CommonBlobTests, testZEO.GenericTestBase
):
    """ZEO's blob checks: blobs kept in the database, sent over the wire
    (RelStorage's blob directory is only the server's cache)."""


@pytest.mark.parametrize("keep_history", [True, False], ids=["hp", "hf"])
def test_zodb_blob_suite_with_our_client(
    postgres: PostgresServer, keep_history: bool
) -> None:
    """ZODB's blob doctests and undo tests, each storage a server of ours
    on a new database, the blobs kept in it."""

    class ServerManagingClientStorage(ClientStorage):
        def __init__(self, name: str, blob_dir: str) -> None:
            database = OnNewDatabase()
            database.keep_history = keep_history
            database.dsn = postgres.dsn(
                new_database(postgres, keep_history=keep_history)
            )
            conf = database.relstorage_conf().replace(
                # Absolute: a doctest changes the directory under the server.
                "blob-dir blob-cache",
                f"blob-dir {os.path.abspath('server-' + blob_dir)}",
            )
            address, self._stop_server = start_our_server(storage_conf=conf)
            super().__init__(address, blob_dir=blob_dir, wait_timeout=10)

        def close(self) -> None:
            super().close()
            self._stop_server()

    suite = testblob.storage_reusable_suite(
        f"RelStorage{keep_history}",
        ServerManagingClientStorage,
        test_undo=keep_history,
    )
    # blob_transaction.txt opens a committed blob file for writing, which
    # root may do whatever the mode bits say: tests/client runs it as nobody.
    failure = run_suite(select(suite, "blob_transaction.txt", keep=False))
    assert failure is None, failure
