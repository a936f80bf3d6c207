"""Blob uploads and shared-directory blob names, on the server side.

Two ways a committed blob reaches the storage (docs/architecture.md, Blob transfer):

* **Streamed** (the default): ``storeBlobStart``, any number of
  ``storeBlobChunk(bytes)``, then ``storeBlobEnd(oid, serial, data, token)``.
  The chunks go into a temporary file in the storage's temporary directory
  as they arrive -- outside the commit lock, which only the vote takes --
  written by the connection's ``FileWriter`` in a worker thread, never on
  the event loop.  The vote waits until the writer has closed the file,
  then hands it to ``storage.storeBlob``.
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
import functools
import os
import secrets
from typing import BinaryIO, TypeGuard

from ZODB.POSException import StorageTransactionError

from .file_writer import Failed, FileWriter
from .storage_api import BlobStorage, ServedStorage


def blob_storage(storage: ServedStorage) -> BlobStorage:
    """``storage`` if it stores blobs; a clear error otherwise."""
    if not _stores_blobs(storage):
        raise TypeError("this storage has no blob directory")
    return storage


def _stores_blobs(storage: ServedStorage) -> TypeGuard[BlobStorage]:
    return hasattr(storage, "storeBlob") and hasattr(storage, "loadBlob")


class BlobUpload:
    """One streamed blob being received into a temporary file.

    The loop names the file (no disk access) and submits the work on it to
    ``writer``: create it, write each chunk, close it -- or close and
    remove it.  The file object is used only by those jobs, in the
    writer's thread; ``failed`` hears, on the loop, of a job that failed.
    """

    def __init__(
        self, storage: ServedStorage, writer: FileWriter, failed: Failed | None = None
    ) -> None:
        directory = blob_storage(storage).temporaryDirectory()
        self.path = os.path.join(directory, f"{secrets.token_hex(12)}.upload")
        self._writer = writer
        self._failed = failed
        #: Owned by the writer's jobs.
        self._file: BinaryIO | None = None
        writer.submit(self._create, 0, failed)

    def __repr__(self) -> str:
        return f"<BlobUpload {self.path}>"

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``, after what was written before it."""
        self._writer.submit(
            functools.partial(self._append, chunk), len(chunk), self._failed
        )

    def finish(self) -> str:
        """Close the file once written; its path.  Wait for the writer's
        ``idle`` before reading the file."""
        self._writer.submit(self._close, 0, self._failed)
        return self.path

    def discard(self) -> None:
        """Close the file once written, and remove it."""
        self._writer.submit(self._remove)

    # -- in the writer's thread --------------------------------------------

    def _create(self) -> None:
        descriptor = os.open(
            self.path,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
            0o600,
        )
        self._file = os.fdopen(descriptor, "wb")

    def _append(self, chunk: bytes) -> None:
        if self._file is None:
            raise OSError(f"{self.path} is not open for writing")
        self._file.write(chunk)

    def _close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()

    def _remove(self) -> None:
        try:
            self._close()
        finally:
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
