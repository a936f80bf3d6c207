"""Packing a FileStorage in a child process.

Nearly all of a FileStorage pack is Python: it walks every record to find
what is reachable at the pack time (18.7 s of 22 s for 320,000 objects)
and copies what is.  In a thread of the server that work holds the
interpreter lock against the event loop and the storage thread, so every
commit during a pack waits for it in switch-interval slices.

``pack`` is an ``IFileStoragePacker`` (FileStorage's ``packer`` hook) that
runs that first phase in a child process, ``python -m
zodbserver.child_packer``, reading the file through a handle of its own as
FileStorage's packer does: the walk, and the copy of every transaction up
to the pack time into ``Data.fs.pack``, with the blob directory's
``.removed`` list.  The child writes the index of what it copied next to
the ``.pack`` file and prints where the copy stopped.  The server process
then does what FileStorage's packer does next: it copies the transactions
committed since the pack began, holding the commit lock for the last of
them, and hands FileStorage the new file's size and index.  Those are few
and fast; FileStorage renames the files and removes the blobs as always.

A child that fails (the file is damaged, the disk is full) prints why; the
pack then fails with that message and the storage is left as it was.  A
child whose server has gone stops within a second.

``install`` makes the server's FileStorages pack this way, unless their
configuration names a ``packer`` of its own.  Files below
``CHILD_PACK_MIN_SIZE`` are packed in the server's process: their pack
takes less time than starting a child.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import ZODB.blob
import ZODB.serialize
from ZODB.FileStorage.FileStorage import FileStorage, RedundantPackWarning
from ZODB.FileStorage.fspack import FileStoragePacker, PackCopier
from ZODB.fsIndex import fsIndex
from ZODB.POSException import StorageError

#: A Data.fs smaller than this is packed in the server's own process.
CHILD_PACK_MIN_SIZE = 16 * 1024 * 1024
#: What the child prints when the pack time is before the last pack's.
_REDUNDANT = "redundant"
#: What the child prints when the pack would not change the file.
_UNCHANGED = "unchanged"


def install(storage: Any) -> None:
    """Pack ``storage`` with ``choose_packer`` if it is a FileStorage using
    FileStorage's own packer."""
    if isinstance(storage, FileStorage) and "packer" not in vars(storage):
        storage.packer = choose_packer


def choose_packer(
    storage: FileStorage, referencesf: Any, stop: bytes, gc: bool
) -> tuple[int, fsIndex] | None:
    """``pack`` for files of ``CHILD_PACK_MIN_SIZE`` and more, FileStorage's
    packer for smaller ones and for reference finders other than ZODB's
    (a child process cannot be handed a function)."""
    if (
        storage.getSize() < CHILD_PACK_MIN_SIZE
        or referencesf is not ZODB.serialize.referencesf
    ):
        return FileStorage.packer(storage, referencesf, stop, gc)
    return pack(storage, referencesf, stop, gc)


def pack(
    storage: FileStorage, referencesf: Any, stop: bytes, gc: bool
) -> tuple[int, fsIndex] | None:
    """An ``IFileStoragePacker`` whose walk and copy run in a child."""
    packer = _FinishingPacker(storage, referencesf, stop, gc)
    try:
        size = packer.pack()
        return None if size is None else (size, packer.index)
    finally:
        packer.close()


class _FinishingPacker(FileStoragePacker):
    """FileStorage's packer, with its first phase done by a child."""

    file_end: int
    locked: bool
    _file: Any
    _tfile: Any
    blob_removed: Any

    def __init__(
        self, storage: FileStorage, referencesf: Any, stop: bytes, gc: bool
    ) -> None:
        super().__init__(storage, referencesf, stop, gc)
        self._gc = gc
        self._blob_dir = storage.blob_dir
        if self.blob_removed is not None:
            # The child writes the list; FileStorage reads it from the disk.
            self.blob_removed.close()
            self.blob_removed = None

    def pack(self) -> int | None:
        stopped = _run_child(
            self._path, self._blob_dir, self._stop, self._gc, self.file_end
        )
        if stopped is None:
            return None
        packed_path = self._path + ".pack"
        try:
            self.index = fsIndex.load(_index_path(self._path))["index"]
            self._tfile = open(packed_path, "r+b")  # noqa: SIM115 (closed by close())
            self._tfile.seek(0, os.SEEK_END)
            self._copier = PackCopier(self._tfile, self.index, self.tindex)
            return self._copy_the_rest(stopped)
        except BaseException:
            if self.locked:
                self._commit_lock.release()
                self.locked = False
            self.close()
            _remove(packed_path)
            raise
        finally:
            _remove(_index_path(self._path))

    def _copy_the_rest(self, position: int) -> int:
        """Copy what was committed from ``position`` on; the new file's size,
        with the commit lock held (``IFileStoragePacker``)."""
        self._commit_lock.acquire()
        self.locked = True
        with self._lock:
            # A handle of its own, unbuffered, that sees every transaction
            # finished up to now (as FileStorage's packer reopens).
            self._file.close()
            self._file = open(self._path, "rb", 0)  # noqa: SIM115 (closed by close())
            self.file_end = self._file.seek(0, os.SEEK_END)
        if position < self.file_end:
            self.copyRest(position)  # leaves the commit lock held
        size = self._tfile.tell()
        self._tfile.flush()
        os.fsync(self._tfile.fileno())
        self._tfile.close()
        self._tfile = None
        self._file.close()
        return size


def _index_path(path: str) -> str:
    return path + ".pack.index"


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _run_child(
    path: str, blob_dir: str | None, stop: bytes, gc: bool, file_end: int
) -> int | None:
    """Where the child's copy stopped in the old file, or None when there is
    nothing to pack; ``RedundantPackWarning`` or ``StorageError`` else."""
    arguments = {
        "path": path,
        "blob_dir": blob_dir,
        "stop": stop.hex(),
        "gc": gc,
        "file_end": file_end,
        "parent": os.getpid(),
    }
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.run(
        [sys.executable, "-m", "zodbserver.child_packer", json.dumps(arguments)],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    answer = child.stdout.strip()
    if child.returncode != 0:
        why = child.stderr.strip().splitlines()[-1:] or [f"exit {child.returncode}"]
        _remove(path + ".pack")
        raise StorageError(f"packing {path} failed in the child process: {why[0]}")
    if answer.startswith(_REDUNDANT):
        raise RedundantPackWarning(answer[len(_REDUNDANT) :].strip())
    if answer == _UNCHANGED:
        return None
    return int(answer)


class _FileStorageFacts:
    """What ``FileStoragePacker`` asks of its storage, in the child."""

    def __init__(self, path: str, blob_dir: str | None, file_end: int) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 (closed by close())
        self.blob_dir = blob_dir
        self._size = file_end
        self._lock = threading.RLock()
        self._commit_lock = threading.Lock()

    def getSize(self) -> int:
        return self._size

    def is_blob_record(self, record: bytes) -> bool:
        return bool(ZODB.blob.is_blob_record(record))

    def close(self) -> None:
        self._file.close()


def _watch_parent(parent: int) -> None:
    """End this process once the server that started it has gone."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(3)


def _first_phase(arguments: dict[str, Any]) -> str:
    """The child's work: the answer it prints."""
    path = arguments["path"]
    facts = _FileStorageFacts(path, arguments["blob_dir"], arguments["file_end"])
    packer = FileStoragePacker(
        facts,
        ZODB.serialize.referencesf,
        bytes.fromhex(arguments["stop"]),
        arguments["gc"],
    )
    try:
        try:
            packer.gc.findReachable()
        except RedundantPackWarning as warning:
            return f"{_REDUNDANT} {warning}"
        packer._tfile = open(path + ".pack", "w+b")  # noqa: SIM115 (closed by close())
        packer._file.seek(0)
        packer._tfile.write(packer._file.read(packer._metadata_size))
        packer._copier = PackCopier(packer._tfile, packer.index, packer.tindex)
        position, copied_to = packer.copyToPacktime()
        if position == copied_to:
            _remove(path + ".pack")
            return _UNCHANGED
        packer._tfile.flush()
        os.fsync(packer._tfile.fileno())
        packer.index.save(copied_to, _index_path(path))
        return str(position)
    finally:
        packer.close()
        facts.close()


def main(argv: list[str]) -> int:
    arguments = json.loads(argv[0])
    threading.Thread(
        target=_watch_parent, args=(arguments["parent"],), daemon=True
    ).start()
    try:
        answer = _first_phase(arguments)
    except Exception as error:  # reported to the server, which fails the pack
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
