"""A transaction's buffered operations, and the file they spill to.

Between ``tpc_begin`` and the vote, a client's stores are only recorded
(docs/architecture.md, The commit path).  A ``PendingTransaction`` keeps
them in a list until their data passes ``transaction_spool_threshold``;
from then on every operation, the earlier ones first, goes to a ``Spool``:
a temporary file beside the storage (for a FileStorage, in the directory of
its ``Data.fs``; elsewhere in the system's temporary directory).  The replay
reads the operations back one at a time, so a transaction of any size costs
the server a bounded amount of memory.  Blobs are not spooled: they are
files already.

Who owns a spool
----------------

The event loop owns a pending transaction, and so its spool, from
``tpc_begin`` until the vote hands it to the storage thread: only the loop
appends (``add``; the writes land in the page cache, as blob uploads do).
During the replay the storage thread owns it and reads it (iterating,
which first flushes what the loop wrote).  The vote's result hands it back:
after conflicts the client's resolved stores are appended and the next vote
replays the whole file again, from the start.  ``close`` removes the file;
the loop calls it when the transaction ends, once no storage call uses the
transaction any more.

A spool is read through a descriptor opened when the file is made, never
again by name, so nothing but the transaction that wrote a file reads it.
A server killed in the middle of a transaction leaves its spool behind:
a restart ignores it (``SpoolLocation.remove_stale`` deletes it when the
storage is next opened for writing).

The file
--------

Records follow each other with no file header, one per operation::

    kind      u8          1 store, 2 checkread, 3 delete, 4 restore, 5 undo
    lengths   4 x u32     each field's length; 0xFFFFFFFF: None, or unused
    check     u32         CRC-32 of the 17 bytes above
    fields    the bytes of each field that is not None, in order

All integers are big-endian.  The fields of each kind are those of its
operation tuple, after the kind: ``store (oid, serial or None, data)``,
``checkread (oid, serial or None)``, ``delete (oid, serial)``, ``restore
(oid, serial, data or None, prev_txn or None)``, ``undo (transaction_id)``.
The check covers the header only, so that a damaged length cannot make the
reader take data for records; checksumming the data would cost as much
time as writing it, and a file that lives for one transaction in the page
cache is not where records go bad.  A file that ends early, or a header
that fails its check, raises ``TransactionSpoolError``.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import logging
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Final, Literal, cast

from ZODB.FileStorage import FileStorage
from zope.proxy import removeAllProxies

from ..errors import TransactionSpoolError
from .blobs import remove_quietly
from .storage_api import ServedStorage

logger = logging.getLogger(__name__)

# The operations a transaction buffers before its vote, replayed in order
# under the commit lock: tuples whose first item names the operation.
STORE: Final = "store"
CHECK_READ: Final = "checkread"
DELETE: Final = "delete"
RESTORE: Final = "restore"
UNDO: Final = "undo"

#: ``(STORE, oid, serial, data)``; no serial for a new object.
Store = tuple[Literal["store"], bytes, bytes | None, bytes]
#: ``(CHECK_READ, oid, serial)``
CheckRead = tuple[Literal["checkread"], bytes, bytes | None]
#: ``(DELETE, oid, serial)``
Delete = tuple[Literal["delete"], bytes, bytes]
#: ``(RESTORE, oid, serial, data, prev_txn)``
Restore = tuple[Literal["restore"], bytes, bytes, bytes | None, bytes | None]
#: ``(UNDO, transaction_id)``
Undo = tuple[Literal["undo"], bytes]
Operation = Store | CheckRead | Delete | Restore | Undo

#: Spool file names: the prefix, a storage's tag, tempfile's unique part.
FILE_PREFIX: Final = ".zodbserver-txn-"
FILE_SUFFIX: Final = ".spool"
#: Bytes of the file read or written per system call (large fields bypass it).
BUFFER_SIZE: Final = 256 * 1024

_LENGTHS = struct.Struct(">B4I")
_CHECK = struct.Struct(">I")
HEADER_SIZE: Final = _LENGTHS.size + _CHECK.size
#: The length of a field that is None, or that the kind does not have.
_ABSENT: Final = 0xFFFFFFFF


class _Field(enum.Enum):
    REQUIRED = "bytes"
    OPTIONAL = "bytes or None"
    UNUSED = "not used"


_R, _O, _U = _Field.REQUIRED, _Field.OPTIONAL, _Field.UNUSED

#: kind: (code, what each of the four fields is)
_LAYOUTS: Final[dict[str, tuple[int, tuple[_Field, _Field, _Field, _Field]]]] = {
    STORE: (1, (_R, _O, _R, _U)),
    CHECK_READ: (2, (_R, _O, _U, _U)),
    DELETE: (3, (_R, _R, _U, _U)),
    RESTORE: (4, (_R, _R, _O, _O)),
    UNDO: (5, (_R, _U, _U, _U)),
}
_KINDS: Final = {code: (kind, fields) for kind, (code, fields) in _LAYOUTS.items()}


def write_operation(stream: IO[bytes], operation: Operation) -> int:
    """Append ``operation`` to ``stream``; the number of bytes written."""
    code, _ = _LAYOUTS[operation[0]]
    fields = operation[1:]
    lengths = [_ABSENT, _ABSENT, _ABSENT, _ABSENT]
    size = HEADER_SIZE
    for index, field in enumerate(fields):
        if field is not None:
            length = len(field)
            if length >= _ABSENT:
                raise TransactionSpoolError(f"a field of {length} bytes is too long")
            lengths[index] = length
            size += length
    head = _LENGTHS.pack(code, *lengths)
    stream.write(head)
    stream.write(_CHECK.pack(zlib.crc32(head)))
    for field in fields:
        if field:
            stream.write(field)
    return size


def read_operations(
    stream: IO[bytes], length: int, name: str = "the spool"
) -> Iterator[Operation]:
    """The operations in the first ``length`` bytes of ``stream``, in order.

    Raises ``TransactionSpoolError`` (naming ``name``) when the stream ends
    before ``length`` bytes, or a record is not one ``write_operation``
    wrote.
    """
    remaining = length
    while remaining > 0:
        if remaining < HEADER_SIZE:
            raise TransactionSpoolError(f"{name}: a record ends past the spool's end")
        header = _read_exactly(stream, HEADER_SIZE, name)
        code, *lengths = _LENGTHS.unpack_from(header)
        (check,) = _CHECK.unpack_from(header, _LENGTHS.size)
        if zlib.crc32(header[: _LENGTHS.size]) != check:
            raise TransactionSpoolError(
                f"{name}: record header at byte {length - remaining} is damaged"
            )
        remaining -= HEADER_SIZE
        try:
            kind, layout = _KINDS[code]
        except KeyError:
            raise TransactionSpoolError(f"{name}: unknown record kind {code}") from None
        values: list[bytes | None] = []
        for field, field_length in zip(layout, lengths, strict=True):
            if field_length == _ABSENT:
                if field is _Field.REQUIRED:
                    raise TransactionSpoolError(f"{name}: a {kind} lacks a field")
                if field is _Field.OPTIONAL:
                    values.append(None)
                continue
            if field is _Field.UNUSED:
                raise TransactionSpoolError(f"{name}: a {kind} has an extra field")
            if field_length > remaining:
                raise TransactionSpoolError(
                    f"{name}: a record ends past the spool's end"
                )
            values.append(_read_exactly(stream, field_length, name))
            remaining -= field_length
        yield cast(Operation, (kind, *values))


def _read_exactly(stream: IO[bytes], size: int, name: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise TransactionSpoolError(f"{name}: the file ends in the middle of a record")
    return data


class Spool:
    """Operations appended to a temporary file and read back in order.

    The file is made at once (``tempfile.mkstemp``: a name no other spool
    has) in ``directory`` (None: the system's temporary directory), named
    ``prefix`` + a unique part + ``.spool``.
    """

    def __init__(self, directory: str | None = None, prefix: str = FILE_PREFIX) -> None:
        descriptor, self.path = tempfile.mkstemp(
            prefix=prefix, suffix=FILE_SUFFIX, dir=directory
        )
        try:
            self._writer = os.fdopen(descriptor, "wb", buffering=BUFFER_SIZE)
        except BaseException:
            os.close(descriptor)
            remove_quietly(self.path)
            raise
        try:
            self._reader = open(self.path, "rb", buffering=BUFFER_SIZE)  # noqa: SIM115
        except BaseException:
            self._writer.close()
            remove_quietly(self.path)
            raise
        #: Bytes written: where the last complete record ends.
        self._length = 0
        self._broken = False
        self.closed = False

    def __repr__(self) -> str:
        return f"<Spool {self.path} {self._length} bytes>"

    def add(self, operation: Operation) -> None:
        """Append ``operation`` (on the event loop)."""
        if self._broken:
            raise TransactionSpoolError(f"{self.path}: an earlier write failed")
        try:
            self._length += write_operation(self._writer, operation)
        except BaseException:
            # Part of a record may be in the file: nothing may follow it.
            self._broken = True
            raise

    def __iter__(self) -> Iterator[Operation]:
        """Every operation added so far, in order (in the storage thread)."""
        if self._broken:
            raise TransactionSpoolError(f"{self.path}: an earlier write failed")
        self._writer.flush()
        self._reader.seek(0)
        yield from read_operations(self._reader, self._length, self.path)

    def close(self) -> None:
        """Remove the file; the spool cannot be used again."""
        if self.closed:
            return
        self.closed = True
        # Removed first, so that closing the writer flushes to no file.
        remove_quietly(self.path)
        for stream in (self._writer, self._reader):
            with contextlib.suppress(OSError):
                stream.close()


@dataclass(frozen=True)
class SpoolLocation:
    """Where one storage's transactions spool."""

    #: None: the system's temporary directory.
    directory: str | None = None
    prefix: str = FILE_PREFIX
    #: Whether this process alone spools under ``prefix`` in ``directory``,
    #: so that a spool file there that it has not opened is left over.
    exclusive: bool = False

    @classmethod
    def of(cls, storage: ServedStorage) -> SpoolLocation:
        """Beside a FileStorage's Data.fs, or in the temporary directory.

        A FileStorage opened for writing holds its ``.lock`` file, so no
        other process spools under its name in its directory; a read-only
        one does not (another server may be writing the same file).
        """
        file_storage = removeAllProxies(storage)
        if not isinstance(file_storage, FileStorage):
            return cls()
        directory, name = os.path.split(file_storage._file_name)
        return cls(
            directory,
            f"{FILE_PREFIX}{_file_tag(name)}-",
            exclusive=not file_storage._is_read_only,
        )

    def create(self) -> Spool:
        return Spool(self.directory, self.prefix)

    def remove_stale(self) -> list[str]:
        """Remove the spool files a killed server left; their paths.

        Only names that this location's spools have, exactly, and only in a
        directory that is this process's alone (``exclusive``).  Call it
        before serving, when no transaction of this storage has begun.
        """
        if self.directory is None or not self.exclusive:
            return []
        pattern = re.compile(
            re.escape(self.prefix) + "[a-z0-9_]+" + re.escape(FILE_SUFFIX)
        )
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        removed: list[str] = []
        for name in sorted(names):
            if pattern.fullmatch(name):
                path = os.path.join(self.directory, name)
                with contextlib.suppress(OSError):
                    os.remove(path)
                    removed.append(path)
        if removed:
            logger.info(
                "removed %d transaction spool file(s) left in %s by a server "
                "that stopped during a transaction",
                len(removed),
                self.directory,
            )
        return removed


def _file_tag(name: str) -> str:
    """A storage file's name as part of a spool file's name.

    ``-`` never occurs in tempfile's unique part, so the tag of ``Data.fs``
    never matches a spool of ``Data.fs-x``.  A long name is hashed, to keep
    spool names short enough for the file system.
    """
    if len(name) <= 64:
        return name
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
