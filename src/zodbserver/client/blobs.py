"""Blob files on the client: a private download cache, or a directory shared
with the server.

**Private cache** (the default).  Files live in ZEO's ``zeocache`` layout so
an existing ZEO blob cache keeps working: directory ``oid % 997``, file
``{oid // 997}.{tid hex}.blob``, and a ``.lock`` file per directory that
serialises downloads between threads and processes.  A commit uploads each
blob as ``storeBlobStart``, 59000-byte ``storeBlobChunk``s and
``storeBlobEnd``; a load asks ``sendBlob`` and the server streams
``receiveBlobStart/Chunk/Stop`` (written to ``<file>.dl``, renamed on stop)
before it replies.  With a size limit, the least recently accessed files are
removed once ``size_check`` percent of it has been added.

**Shared directory.**  Client and server use the same directory in ZODB's
own layout.  A commit places the file next to its final location as
``<tid>XXXX.tmp-`` and sends only its name (``storeBlobShared``); a load is
a plain file lookup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator

import zc.lockfile
import ZODB.blob
from ZODB import POSException
from ZODB.utils import u64

logger = logging.getLogger(__name__)

CHUNK_SIZE = 59000
_LOCK_ATTEMPTS = 6000  # of 10 ms each


class BlobCacheLayout:
    """ZEO's ``zeocache`` layout: few directories, many files."""

    size = 997

    def oid_to_path(self, oid: bytes) -> str:
        return str(u64(oid) % self.size)

    def getBlobFilePath(self, oid: bytes, tid: bytes) -> str:  # noqa: N802 (ZODB API)
        base, remainder = divmod(u64(oid), self.size)
        return os.path.join(
            str(remainder), f"{base}.{tid.hex()}{ZODB.blob.BLOB_SUFFIX}"
        )


ZODB.blob.LAYOUTS.setdefault("zeocache", BlobCacheLayout())


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """Hold the ``.lock`` of the directory containing ``path``."""
    lock_path = os.path.join(os.path.dirname(path), ".lock")
    for _ in range(_LOCK_ATTEMPTS):
        try:
            lock = zc.lockfile.LockFile(lock_path)
            break
        except zc.lockfile.LockError:
            time.sleep(0.01)
    else:
        raise POSException.StorageSystemError(f"cannot lock {lock_path}")
    try:
        yield
    finally:
        lock.close()


def _touch(path: str) -> str:
    with contextlib.suppress(OSError):
        os.utime(path, (time.time(), os.stat(path).st_mtime))
    return path


class BlobFiles:
    """The client's blob directory, private or shared."""

    def __init__(
        self,
        blob_dir: str,
        shared: bool = False,
        cache_size: int | None = None,
        size_check: int = 10,
    ) -> None:
        self.shared = shared
        layout = "automatic" if shared else "zeocache"
        self.helper = ZODB.blob.FilesystemHelper(blob_dir, layout_name=layout)
        self.helper.create()
        self.cache_size = None if shared else cache_size
        self._check_every = (cache_size or 0) * size_check // 100
        self._added = 0

    @property
    def temp_dir(self) -> str:
        return str(self.helper.temp_dir)

    def filename(self, oid: bytes, tid: bytes) -> str:
        return str(self.helper.getBlobFilename(oid, tid))

    # -- committing --------------------------------------------------------

    def adopt(self, oid: bytes, serial: bytes, blobfilename: str) -> str:
        """Move an uncommitted blob next to its final place; return the path."""
        self.helper.getPathForOID(oid, create=True)
        fd, target = self.helper.blob_mkstemp(oid, serial)
        os.close(fd)
        target += "-"  # the server accepts ".tmp" plus one character
        ZODB.blob.rename_or_copy_blob(blobfilename, target)
        os.remove(target[:-1])
        return str(target)

    @staticmethod
    def chunks(path: str) -> Iterator[bytes]:
        with open(path, "rb") as file:
            while chunk := file.read(CHUNK_SIZE):
                yield chunk

    def committed(self, oid: bytes, tid: bytes, path: str) -> None:
        """After the commit: the uploaded file becomes the cached revision."""
        if self.shared:
            return  # the server moved it into place
        target = self.filename(oid, tid)
        self.helper.getPathForOID(oid, create=True)
        with _locked(target):
            self._added += os.stat(path).st_size
            ZODB.blob.rename_or_copy_blob(path, target)
        self._maybe_prune()

    def discard(self, path: str) -> None:
        with contextlib.suppress(OSError):
            os.remove(path)

    # -- loading -----------------------------------------------------------

    def cached(self, oid: bytes, tid: bytes) -> str | None:
        path = self.filename(oid, tid)
        return _touch(path) if os.path.exists(path) else None

    @contextlib.contextmanager
    def download_lock(self, oid: bytes, tid: bytes) -> Iterator[None]:
        self.helper.createPathForOID(oid)
        with _locked(self.filename(oid, tid)):
            yield

    # Called on the connection thread while the server streams a blob.
    def receive_start(self, oid: bytes, tid: bytes) -> None:
        with open(self.filename(oid, tid) + ".dl", "wb"):
            pass

    def receive_chunk(self, oid: bytes, tid: bytes, chunk: bytes) -> None:
        with open(self.filename(oid, tid) + ".dl", "ab") as file:
            file.write(chunk)
        self._added += len(chunk)

    def receive_stop(self, oid: bytes, tid: bytes) -> None:
        path = self.filename(oid, tid)
        os.replace(path + ".dl", path)
        ZODB.blob.set_not_writable(path)

    def downloaded(self) -> None:
        self._maybe_prune()

    # -- size limit --------------------------------------------------------

    def _maybe_prune(self) -> None:
        if self.cache_size is None or self._added < self._check_every:
            return
        self._added = 0
        self.prune(max(self.cache_size - self._check_every, 0))

    def prune(self, target: int) -> None:
        """Remove least recently accessed files until at most ``target`` bytes."""
        base = self.helper.base_dir
        files = []
        for directory in os.listdir(base):
            if not directory.isdigit():
                continue
            path = os.path.join(base, directory)
            for name in os.listdir(path):
                if name.endswith(ZODB.blob.BLOB_SUFFIX):
                    stat = os.stat(os.path.join(path, name))
                    files.append(
                        (stat.st_atime, stat.st_size, os.path.join(path, name))
                    )
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= target:
                break
            with _locked(path), contextlib.suppress(OSError):
                ZODB.blob.remove_committed(path)
                total -= size
        logger.debug("blob cache pruned to %d bytes", total)
