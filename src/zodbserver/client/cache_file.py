"""The persistent client cache file: a snapshot of ``ClientCache``.

The cache lives in memory while the client runs; this file carries it from
one run to the next.  It is written whole when the storage closes (to a
temporary file, fsynced, then renamed over the old one) and read whole when
the storage opens; its records go into the cache at the first connect, if
verification keeps them (``SavedCache``).  A snapshot is consistent by
construction: it is taken under the cache lock, so its records are exactly
what the cache held at its last tid.  After a crash the previous snapshot
is simply older, and the verification on connect (``getInvalidations``)
brings it up to date.

Format (all integers big-endian)::

    magic     b"ZSC1"
    last_tid  8 bytes
    records   any number of:
                b"r", oid (8), start (8), end (8, z64 = current),
                data length (4), data
    trailer   b"e", record count (8), CRC-32 of every byte before it (4)

Records are in least-recently-used-first order, so eviction order survives.
A file that does not parse, or whose count or checksum is wrong, raises
``CorruptCacheFileError``; the file is then moved aside as ``<name>.bad``
with a warning, and the client starts with an empty cache.

The file is guarded by ``<name>.lock`` (``zc.lockfile``): a second process
asking for the same cache file gets ``StorageInUseError``.
"""

from __future__ import annotations

import gc
import logging
import os
import struct
import zlib
from collections.abc import Iterable, Iterator

import zc.lockfile
from ZODB.utils import z64

from ..errors import StorageInUseError, ZodbServerError
from .cache import CacheRecord, ClientCache

logger = logging.getLogger(__name__)

MAGIC = b"ZSC1"
_RECORD = struct.Struct(">c8s8s8sI")
_TRAILER = struct.Struct(">cQI")


class CorruptCacheFileError(ZodbServerError):
    """A cache file's bytes are not a valid snapshot."""


def encode_cache(last_tid: bytes, records: Iterable[CacheRecord]) -> bytes:
    parts = [MAGIC, last_tid]
    count = 0
    for record in records:
        parts.append(
            _RECORD.pack(
                b"r", record.oid, record.start, record.end or z64, len(record.data)
            )
        )
        parts.append(record.data)
        count += 1
    body = b"".join(parts)
    return body + _TRAILER.pack(b"e", count, zlib.crc32(body))


def _check(data: bytes) -> tuple[bytes, int]:
    """``(last_tid, record count)`` of a whole file whose frame and checksum
    are right; ``CorruptCacheFileError`` else."""
    header = len(MAGIC) + 8
    if len(data) < header + _TRAILER.size or data[: len(MAGIC)] != MAGIC:
        raise CorruptCacheFileError("not a zodbserver cache file")
    body_end = len(data) - _TRAILER.size
    marker, count, checksum = _TRAILER.unpack_from(data, body_end)
    with memoryview(data) as view:
        body_checksum = zlib.crc32(view[:body_end])
    if marker != b"e" or body_checksum != checksum:
        raise CorruptCacheFileError("cache file checksum mismatch")
    return data[len(MAGIC) : header], count


def _records(data: bytes, count: int) -> Iterator[CacheRecord]:
    """The records of a file ``_check`` accepted, one at a time."""
    body_end = len(data) - _TRAILER.size
    unpack = _RECORD.unpack_from
    header_size = _RECORD.size
    position = len(MAGIC) + 8
    found = 0
    while position < body_end:
        if body_end - position < header_size:
            raise CorruptCacheFileError(f"truncated record at byte {position}")
        marker, oid, start, end, size = unpack(data, position)
        first = position + header_size
        position = first + size
        if marker != b"r" or position > body_end:
            raise CorruptCacheFileError(f"bad record at byte {first - header_size}")
        if end == z64:
            end = None
        elif end <= start:
            raise CorruptCacheFileError(f"record ends before it starts at {first}")
        found += 1
        yield CacheRecord(oid, start, end, data[first:position])
    if found != count:
        raise CorruptCacheFileError("cache file record count mismatch")


def decode_cache(data: bytes) -> tuple[bytes, list[CacheRecord]]:
    """``(last_tid, records)`` from a file's bytes; ``CorruptCacheFileError`` else."""
    last_tid, count = _check(data)
    return last_tid, list(_records(data, count))


class SavedCache:
    """A snapshot read from its file and checked whole, not yet taken apart.

    Taking 100,000 records apart costs a client a good part of a second, and
    is wasted when the server then says the snapshot is too old to verify.
    So the records are only read into the cache, by ``restore_into``, once
    verification has decided to keep them (``verification.py``).  Until then
    the snapshot is *pending*, and the storage, closing, leaves the file as
    it is instead of saving an empty cache over it.
    """

    def __init__(self, path: str, last_tid: bytes, count: int, data: bytes) -> None:
        self.path = path
        self.last_tid = last_tid
        self.count = count
        self._data: bytes | None = data

    @property
    def pending(self) -> bool:
        return self._data is not None

    def discard(self) -> None:
        self._data = None

    def restore_into(self, cache: ClientCache) -> bool:
        """Fill ``cache`` with the records; ``False`` (cache empty, file moved
        aside) when one of them is damaged."""
        data, self._data = self._data, None
        if data is None:
            return False
        collecting = gc.isenabled()
        gc.disable()  # a bulk load of objects that all stay: nothing to collect
        try:
            cache.restore(self.last_tid, _records(data, self.count))
        except CorruptCacheFileError as exc:
            cache.clear()
            _move_aside(self.path, exc)
            return False
        finally:
            if collecting:
                gc.enable()
        return True


def _move_aside(path: str, exc: CorruptCacheFileError) -> None:
    logger.warning(
        "the cache file %s is damaged (%s); moved to %s.bad, starting empty",
        path,
        exc,
        path,
    )
    os.replace(path, path + ".bad")


class CacheFile:
    """The locked file a ``ClientCache`` is saved to and read from."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        try:
            self._lock: zc.lockfile.LockFile | None = zc.lockfile.LockFile(
                self.path + ".lock"
            )
        except zc.lockfile.LockError as exc:
            raise StorageInUseError(
                f"the cache file {self.path} is in use by another process"
            ) from exc

    def read(self) -> SavedCache | None:
        """The file's snapshot, if there is a valid one."""
        try:
            with open(self.path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            logger.info("creating the cache file %s", self.path)
            return None
        try:
            last_tid, count = _check(data)
        except CorruptCacheFileError as exc:
            _move_aside(self.path, exc)
            return None
        if not count:
            return None
        logger.info("found the cache file %s (%d records)", self.path, count)
        return SavedCache(self.path, last_tid, count, data)

    def save(self, cache: ClientCache) -> None:
        """Write a snapshot of ``cache`` atomically."""
        with cache.lock:
            data = encode_cache(cache.get_last_tid(), cache.records())
        temporary = self.path + ".tmp"
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def cache_path(
    cache: str | None, client: str | None, var: str | None, storage: str
) -> str | None:
    """Where the persistent cache lives, as ZEO decides it (or ``None``)."""
    if cache is not None:
        return cache
    if client:
        return os.path.join(var or os.getcwd(), f"{client}-{storage}.zec")
    return None
