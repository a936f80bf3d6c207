"""Blob uploads and shared-directory blob names, on the server side.

Two ways a committed blob reaches the storage (docs/architecture.md, Blob transfer):

* **Streamed** (the default): ``storeBlobStart``, any number of
  ``storeBlobChunk(bytes)``, then ``storeBlobEnd(oid, serial, data, token)``.
  The chunks go straight into a temporary file in the storage's temporary
  directory as they arrive -- outside the commit lock, which only the vote
  takes -- and the vote hands the finished file to ``storage.storeBlob``.
* **Shared directory**: the client wrote the file into the blob directory
  both sides mount and sends ``storeBlobShared(oid, serial, data, name,
  token)``.  Only a bare file name is accepted, ending in ``.tmp`` (plus at
  most one character), and it is joined to the oid's own directory, so no
  name from the wire can point anywhere else.

Downloads (``sendBlob``) are streamed by the transport in
``chunks.BLOB_CHUNK_SIZE`` pieces as ``receiveBlobStart/Chunk/Stop`` calls.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import TypeGuard

from ZODB.POSException import StorageTransactionError

from .storage_api import BlobStorage, ServedStorage


def blob_storage(storage: ServedStorage) -> BlobStorage:
    """``storage`` if it stores blobs; a clear error otherwise."""
    if not _stores_blobs(storage):
        raise TypeError("this storage has no blob directory")
    return storage


def _stores_blobs(storage: ServedStorage) -> TypeGuard[BlobStorage]:
    return hasattr(storage, "storeBlob") and hasattr(storage, "loadBlob")


class BlobUpload:
    """One streamed blob being received into a temporary file."""

    def __init__(self, storage: ServedStorage) -> None:
        directory = blob_storage(storage).temporaryDirectory()
        descriptor, self.path = tempfile.mkstemp(suffix=".upload", dir=directory)
        self._file = os.fdopen(descriptor, "wb")

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def finish(self) -> str:
        """Close the file and hand its path over."""
        self._file.close()
        return self.path

    def discard(self) -> None:
        self._file.close()
        remove_quietly(self.path)


def shared_blob_path(storage: ServedStorage, oid: bytes, name: str) -> str:
    """The path of a blob file a client wrote into the shared directory."""
    acceptable = name.endswith(".tmp") or name[:-1].endswith(".tmp")
    if (
        not acceptable
        or os.sep in name
        or (os.altsep and os.altsep in name)
        or name.startswith(".")
        or "\0" in name
    ):
        raise StorageTransactionError(f"refused shared blob file name {name!r:.100}")
    directory = blob_storage(storage).fshelper.getPathForOID(oid)
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise StorageTransactionError(
            f"no blob file {path}: does the client share this server's blob "
            "directory (shared-blob-dir)?"
        )
    return path


def remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)
