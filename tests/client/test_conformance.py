"""ZODB's own storage conformance suites, run with our client against a server.

The mixins come from ``ZODB.tests``; the harness below plays the part of
ZEO's ``testZEO``: each test gets a fresh server on a FileStorage and a
``ClientStorage`` registered with a stand-in database.  One concrete class
is generated per server in ``servers.SERVERS``.
"""

from __future__ import annotations

from typing import Any

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
)
from ZODB.tests.racetest import RaceTests

from zodbserver.client import ClientStorage

from .servers import SERVERS


class DummyDB:
    """The two calls a storage makes on its database, and the transforms."""

    def invalidate(self, *args: Any) -> None:
        pass

    def invalidateCache(self) -> None:
        pass

    def transform_record_data(self, data: bytes) -> bytes:
        return data

    untransform_record_data = transform_record_data


class ClientStorageHarness(StorageTestBase.StorageTestBase):
    server_name = ""

    def setUp(self) -> None:
        super().setUp()  # creates and enters a temp dir
        self._addr, self._stop_server = SERVERS[self.server_name]("Data.fs")
        self._clients: list[ClientStorage] = []
        self._storage = self._open_client()

    def _open_client(self, **options: Any) -> ClientStorage:
        client = ClientStorage(self._addr, wait_timeout=10, **options)
        client.registerDB(DummyDB())
        self._clients.append(client)
        return client

    def _new_storage_client(self) -> ClientStorage:
        return self._open_client()

    def open(self, read_only: bool = False) -> None:
        self._storage.close()
        self._storage = self._open_client(read_only=read_only)

    def tearDown(self) -> None:
        for client in self._clients:
            client.close()
        self._stop_server()
        super().tearDown()


class FullClientStorageTests(
    ClientStorageHarness,
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
    RaceTests,
):
    __test__ = False  # only the per-server subclasses below run


for _name in SERVERS:
    _class_name = "TestClientStorageWith" + _name.replace("-", "")
    globals()[_class_name] = type(
        _class_name,
        (FullClientStorageTests,),
        # ZODB's long race test runs against our server (tests/conftest.py).
        {"server_name": _name, "__test__": True, "long_tests": _name == "ours-M5"},
    )
del _name, _class_name
