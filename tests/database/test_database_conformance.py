"""The storage conformance suites through our server on RelStorage.

ZODB's mixins with our client (as ``tests/client/test_conformance.py`` runs
them on a FileStorage) and ZEO 6's own test classes with ZEO's client (as
``tests/compat/test_zeo_suites.py`` runs them), against our server serving
a RelStorage on a new PostgreSQL database per test, history-preserving and
history-free, with its blobs kept in the database.
"""

from __future__ import annotations

import pytest
from ZEO.tests import testZEO
from ZODB.tests import (
    StorageTestBase,
    BasicStorage,
    ConflictResolution,
    HistoryStorage,
    IteratorStorage,
    MTStorage,
    PackableStorage,
    PersistentStorage,
    ReadOnlyStorage,
    RevisionStorage,
    Synchronization,
    TransactionalUndoStorage,
)

from client.test_conformance import ClientStorageHarness
from compat.test_zeo_suites import OurServer, start_our_server, zeo_checks
from support.postgres import PostgresServer

pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <coroutine object "
        "ClientIO.(call_sync_co|tpc_finish_co):pytest.PytestUnraisableExceptionWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:coroutine 'ClientIO.(call_sync_co|tpc_finish_co)' was never awaited"
        ":RuntimeWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <_io.FileIO name=[0-9]+ mode='rb[+]'"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
]


class OnNewDatabase:
    """Gives each test a new database (``self.dsn``) on the session's
    PostgreSQL server, and its ``zeo.conf`` section (``relstorage_conf``)."""

    keep_history = True
    dsn = ""

    @pytest.fixture(autouse=True)
    def _new_database(self, postgres: PostgresServer) -> None:
        self.dsn = postgres.dsn(postgres.new_database())

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


class TestOurClientHistoryPreserving(
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
    pass


class TestOurClientHistoryFree(
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
    def getConfig(self) -> str:  # noqa: N802 - ZEO's name
        return self.relstorage_conf()


@zeo_checks
class TestZEOClientHistoryPreserving(ZEOClientOnRelStorage, testZEO.FullGenericTests):
    pass


@zeo_checks
class TestZEOClientHistoryFree(ZEOClientOnRelStorage, testZEO.GenericTests):
    keep_history = False
