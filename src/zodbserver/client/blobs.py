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
removed once ``size_check`` percent of it has been added -- but never a
file in a directory whose ``.lock`` is held (a download or a commit is
under way there), a file this process has open, or the file a thread was
last handed by ``cached`` (it is about to be opened).  Only one pruner
works on a directory at a time (``check_size.lock``, as ZEO), and it also
removes ``.dl`` files that a crashed download left behind.

**Shared directory.**  Client and server use the same directory in ZODB's
own layout.  A commit places the file next to its final location as
``<tid>XXXX.tmp-`` and sends only its name (``storeBlobShared``); a load is
a plain file lookup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import BinaryIO

import zc.lockfile
import ZODB.blob
from ZODB import POSException
from ZODB.utils import u64

logger = logging.getLogger(__name__)

_LOCK_ATTEMPTS = 6000  # of 10 ms each
_DOWNLOAD_SUFFIX = ".dl"


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


@contextlib.contextmanager
def _locked_or_busy(lock_path: str) -> Iterator[bool]:
    """Try ``lock_path`` once: True while held, False if someone else has it."""
    try:
        lock = zc.lockfile.LockFile(lock_path)
    except zc.lockfile.LockError:
        yield False
        return
    try:
        yield True
    finally:
        lock.close()


def _open_in_this_process() -> set[str]:
    """Paths of the files this process has open (empty where unknown)."""
    opened = set()
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                opened.add(os.readlink(entry.path))
    return opened


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
        # Several processes may share one cache directory and start together:
        # ZODB's create() tests for each directory before making it.
        os.makedirs(self.helper.temp_dir, exist_ok=True)
        self.helper.create()
        self.cache_size = None if shared else cache_size
        self._check_every = (cache_size or 0) * size_check // 100
        self._added = 0
        self._added_lock = threading.Lock()
        #: Per thread, the path ``cached`` last returned: not to be pruned.
        self._handed_out: dict[int, str] = {}
        #: The ``.dl`` files of downloads in progress, kept open between chunks.
        self._downloads: dict[tuple[bytes, bytes], BinaryIO] = {}
        self._downloads_lock = threading.Lock()

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

    def committed(self, oid: bytes, tid: bytes, path: str) -> None:
        """After the commit: the uploaded file becomes the cached revision."""
        if self.shared:
            return  # the server moved it into place
        target = self.filename(oid, tid)
        self.helper.getPathForOID(oid, create=True)
        with _locked(target):
            self._count(os.stat(path).st_size)
            ZODB.blob.rename_or_copy_blob(path, target)
        self._hand_out(target)
        self._maybe_prune()

    def discard(self, path: str) -> None:
        with contextlib.suppress(OSError):
            os.remove(path)

    # -- loading -----------------------------------------------------------

    def cached(self, oid: bytes, tid: bytes) -> str | None:
        path = self.filename(oid, tid)
        if not os.path.exists(path):
            return None
        self._hand_out(path)
        return _touch(path)

    @contextlib.contextmanager
    def download_lock(self, oid: bytes, tid: bytes) -> Iterator[None]:
        self.helper.createPathForOID(oid)
        try:
            with _locked(self.filename(oid, tid)):
                yield
        finally:
            self._close_download(oid, tid)  # one the server never finished

    # Called on the connection thread while the server streams a blob.
    def receive_start(self, oid: bytes, tid: bytes) -> None:
        self._close_download(oid, tid)
        # Truncates whatever an interrupted download left.
        stream = open(self.filename(oid, tid) + _DOWNLOAD_SUFFIX, "wb")  # noqa: SIM115
        with self._downloads_lock:
            self._downloads[oid, tid] = stream

    def receive_chunk(self, oid: bytes, tid: bytes, chunk: bytes) -> None:
        with self._downloads_lock:
            stream = self._downloads.get((oid, tid))
            if stream is None:  # closed early, or never started: append
                stream = open(self.filename(oid, tid) + _DOWNLOAD_SUFFIX, "ab")  # noqa: SIM115
                self._downloads[oid, tid] = stream
            stream.write(chunk)
            stream.flush()  # on disk as it arrives (a no-op for big chunks)
        self._count(len(chunk))

    def receive_stop(self, oid: bytes, tid: bytes) -> None:
        self._close_download(oid, tid)
        path = self.filename(oid, tid)
        os.replace(path + _DOWNLOAD_SUFFIX, path)
        ZODB.blob.set_not_writable(path)

    def close(self) -> None:
        """Close the files of downloads that never finished."""
        with self._downloads_lock:
            streams, self._downloads = list(self._downloads.values()), {}
        for stream in streams:
            stream.close()

    def _close_download(self, oid: bytes, tid: bytes) -> None:
        with self._downloads_lock:
            stream = self._downloads.pop((oid, tid), None)
            if stream is not None:
                stream.close()

    def downloaded(self) -> None:
        self._maybe_prune()

    # -- size limit --------------------------------------------------------

    def _hand_out(self, path: str) -> None:
        with self._added_lock:
            self._handed_out[threading.get_ident()] = path

    def _in_use(self) -> set[str]:
        """Files not to prune: handed out to a live thread, or open here."""
        alive = {thread.ident for thread in threading.enumerate()}
        with self._added_lock:
            for ident in set(self._handed_out) - alive:
                del self._handed_out[ident]
            handed_out = set(self._handed_out.values())
        return handed_out | _open_in_this_process()

    def _count(self, size: int) -> None:
        with self._added_lock:
            self._added += size

    def _maybe_prune(self) -> None:
        if self.cache_size is None:
            return
        with self._added_lock:
            if self._added < self._check_every:
                return
            self._added = 0
        self.prune(max(self.cache_size - self._check_every, 0))

    def prune(self, target: int) -> None:
        """Remove least recently accessed files until at most ``target`` bytes.

        Another process (or thread) already pruning this directory makes
        this a no-op: it does the job.
        """
        check_lock = os.path.join(self.helper.base_dir, "check_size.lock")
        with _locked_or_busy(check_lock) as acquired:
            if acquired:
                self._prune(target)

    def _prune(self, target: int) -> None:
        files = []
        for directory in self._directories():
            with contextlib.suppress(OSError):
                for entry in os.scandir(directory):
                    if entry.name.endswith(ZODB.blob.BLOB_SUFFIX):
                        stat = entry.stat()
                        files.append((stat.st_atime, stat.st_size, entry.path))
        total = sum(size for _, size, _ in files)
        in_use = self._in_use()
        for _, size, path in sorted(files):
            if total <= target:
                break
            if path in in_use or os.path.realpath(path) in in_use:
                continue
            lock_path = os.path.join(os.path.dirname(path), ".lock")
            with _locked_or_busy(lock_path) as acquired:
                if not acquired:
                    continue  # a download or a commit is under way there
                try:
                    ZODB.blob.remove_committed(path)
                except OSError:  # gone already; or open, on Windows
                    continue
                total -= size
        self._remove_abandoned_downloads()
        logger.debug("blob cache pruned to %d bytes", total)

    def _directories(self) -> list[str]:
        base = self.helper.base_dir
        return [os.path.join(base, name) for name in os.listdir(base) if name.isdigit()]

    def _remove_abandoned_downloads(self) -> None:
        """``.dl`` files in unlocked directories: no download is writing them."""
        for directory in self._directories():
            with contextlib.suppress(OSError):
                downloads = [
                    entry.path
                    for entry in os.scandir(directory)
                    if entry.name.endswith(_DOWNLOAD_SUFFIX)
                ]
                if not downloads:
                    continue
                lock_path = os.path.join(directory, ".lock")
                with _locked_or_busy(lock_path) as acquired:
                    for path in downloads if acquired else ():
                        with contextlib.suppress(OSError):
                            os.remove(path)
