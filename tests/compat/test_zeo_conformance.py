"""ZODB's storage conformance suites, run by ZEO 6's own ClientStorage
against our server over real sockets.

Each class composes ZODB's test mixins the way ZEO's own test suite does,
with the server under test being ours (in a thread, on 127.0.0.1 port 0)
serving a real FileStorage (or a MappingStorage) in a temporary directory.
Every FileStorage suite runs with both wire encodings, msgpack (M5) and
pickle (Z5).
"""

from __future__ import annotations

import os
from typing import Any

from ZEO.ClientStorage import ClientStorage
from ZODB.FileStorage import FileStorage
from ZODB.MappingStorage import MappingStorage
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

from zodbserver.server.thread import ServerThread


class DummyDB:
    """What a ClientStorage needs of a database in these tests."""

    def invalidate(self, *args: Any, **kwargs: Any) -> None:
        pass

    def invalidateCache(self) -> None:  # noqa: N802 - ZODB's name
        pass

    def transform_record_data(self, data: bytes) -> bytes:
        return data

    def untransform_record_data(self, data: bytes) -> bytes:
        return data


class OurServerBase(StorageTestBase.StorageTestBase):
    msgpack = True

    def make_storage(self) -> Any:
        return FileStorage(os.path.abspath("Data.fs"))

    def setUp(self) -> None:
        super().setUp()
        self._server = ServerThread({"1": self.make_storage()}, msgpack=self.msgpack)
        self._address = self._server.start()
        self._storage = self._new_storage_client()

    def tearDown(self) -> None:
        self._storage.close()
        self._server.stop()
        super().tearDown()

    def _new_storage_client(self, **options: Any) -> ClientStorage:
        client = ClientStorage(
            self._address,
            "1",
            wait=True,
            wait_timeout=30,
            blob_dir=os.path.abspath("blob-cache"),
            **options,
        )
        client.registerDB(DummyDB())
        return client

    def open(self, read_only: bool = False) -> None:
        # ReadOnlyStorage and PersistentStorage reopen the storage.
        self._storage.close()
        self._storage = self._new_storage_client(read_only=read_only)


class GenericSuites(
    OurServerBase,
    BasicStorage.BasicStorage,
    PackableStorage.PackableStorage,
    Synchronization.SynchronizedStorage,
    MTStorage.MTStorage,
    ReadOnlyStorage.ReadOnlyStorage,
    PersistentStorage.PersistentStorage,
):
    pass


class FullSuites(
    GenericSuites,
    ConflictResolution.ConflictResolvingStorage,
    ConflictResolution.ConflictResolvingTransUndoStorage,
    HistoryStorage.HistoryStorage,
    IteratorStorage.IteratorStorage,
    PackableStorage.PackableUndoStorage,
    RevisionStorage.RevisionStorage,
    TransactionalUndoStorage.TransactionalUndoStorage,
):
    pass


class TestFileStorageMsgpack(FullSuites):
    msgpack = True


class TestFileStoragePickle(FullSuites):
    msgpack = False


class TestMappingStorage(GenericSuites):
    def make_storage(self) -> Any:
        return MappingStorage()
