"""What the server needs of a storage it hosts, as typing protocols.

ZODB's storages (``FileStorage``, ``MappingStorage``, ``DemoStorage``, a
``ClientStorage`` to another server, ...) are duck-typed: these protocols
name the methods the server calls and what they return, after ZODB's
``IStorage``, ``IStorageUndoable``, ``IStorageIteration`` and
``IBlobStorage``.  Methods only some storages have (``registerDB``,
``supportsUndo``, ``record_iternext``, ``lastInvalidations``) are looked up
with ``getattr`` where they are used; blob support is checked by
``blobs.blob_storage``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from ZODB.Connection import TransactionMetaData

#: ``loadBefore``'s answer: ``(data, start_tid, end_tid)``, with no end tid
#: for the current revision; None when the object did not exist yet.
LoadResult = tuple[bytes, bytes, bytes | None] | None

#: ``record_iternext``'s answer: ``(oid, tid, data, next_oid)``, with no
#: next oid after the last object.
RecordIteration = tuple[bytes, bytes, bytes, bytes | None]


class DataRecord(Protocol):
    """One object revision of a transaction (``IStorageRecordInformation``)."""

    oid: bytes
    tid: bytes
    data: bytes | None
    data_txn: bytes | None


class TransactionRecord(Protocol):
    """One transaction of an iteration (``IStorageTransactionInformation``)."""

    tid: bytes
    status: str
    user: bytes
    description: bytes
    extension: dict[str, Any]

    def __iter__(self) -> Iterator[DataRecord]: ...


class ServedStorage(Protocol):
    """A storage as the server uses it."""

    #: Replaced when clients resolve conflicts themselves.
    tryToResolveConflict: Callable[..., bytes]

    def __len__(self) -> int: ...

    def getName(self) -> str: ...

    def getSize(self) -> int: ...

    def isReadOnly(self) -> bool: ...

    def lastTransaction(self) -> bytes: ...

    def close(self) -> None: ...

    # -- reads

    def loadBefore(self, oid: bytes, tid: bytes) -> LoadResult: ...

    def loadSerial(self, oid: bytes, serial: bytes) -> bytes: ...

    def getTid(self, oid: bytes) -> bytes: ...

    def history(self, oid: bytes, size: int = 1) -> list[dict[str, Any]]: ...

    def iterator(
        self, start: bytes | None = None, stop: bytes | None = None
    ) -> Iterable[TransactionRecord]: ...

    def new_oid(self) -> bytes: ...

    # -- administration

    def pack(self, t: float, referencesf: Callable[[bytes], list[bytes]]) -> None: ...

    def undoLog(self, first: int, last: int) -> list[dict[str, Any]]: ...

    def undoInfo(
        self, first: int, last: int, specification: dict[str, Any] | None
    ) -> list[dict[str, Any]]: ...

    # -- two-phase commit

    def tpc_begin(
        self,
        transaction: TransactionMetaData,
        tid: bytes | None = None,
        status: str = " ",
    ) -> None: ...

    def store(
        self,
        oid: bytes,
        serial: bytes | None,
        data: bytes,
        version: str,
        transaction: TransactionMetaData,
    ) -> None: ...

    def restore(
        self,
        oid: bytes,
        serial: bytes,
        data: bytes | None,
        version: str,
        prev_txn: bytes | None,
        transaction: TransactionMetaData,
    ) -> None: ...

    def checkCurrentSerialInTransaction(
        self, oid: bytes, serial: bytes | None, transaction: TransactionMetaData
    ) -> None: ...

    def deleteObject(
        self, oid: bytes, serial: bytes, transaction: TransactionMetaData
    ) -> None: ...

    def undo(
        self, transaction_id: bytes, transaction: TransactionMetaData
    ) -> tuple[bytes, list[bytes]]: ...

    def tpc_vote(self, transaction: TransactionMetaData) -> Iterable[bytes] | None: ...

    def tpc_finish(
        self, transaction: TransactionMetaData, func: Callable[[bytes], object] = ...
    ) -> bytes | None: ...

    def tpc_abort(self, transaction: TransactionMetaData) -> None: ...


class BlobPaths(Protocol):
    """Where a blob storage keeps an object's files (ZODB's ``FilesystemHelper``)."""

    def getPathForOID(self, oid: bytes, create: bool = False) -> str: ...


class BlobStorage(ServedStorage, Protocol):
    """A storage with a blob directory (``IBlobStorage``)."""

    fshelper: BlobPaths

    def temporaryDirectory(self) -> str: ...

    def loadBlob(self, oid: bytes, serial: bytes) -> str: ...

    def storeBlob(
        self,
        oid: bytes,
        serial: bytes | None,
        data: bytes,
        blobfilename: str,
        version: str,
        transaction: TransactionMetaData,
    ) -> None: ...
