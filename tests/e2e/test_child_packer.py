"""A FileStorage packed by a child process (``zodbserver.child_packer``).

ZODB's own pack tests run on a FileStorage that packs this way; a pack of
history, garbage and blobs leaves the same records as FileStorage's packer;
commits made while the child works are kept; a child that fails leaves the
storage as it was; a child whose server has gone stops.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import unittest
from collections.abc import Iterator
from typing import Any

import pytest
import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZODB.blob import Blob
from ZODB.FileStorage import FileIterator, FileStorage
from ZODB.POSException import StorageError
from ZODB.serialize import referencesf
from ZODB.tests import PackableStorage, StorageTestBase, Synchronization
from ZODB.utils import u64

from zodbserver import child_packer
from zodbserver.config import load_config, open_storages


class ChildPackedFileStorageTests(
    StorageTestBase.StorageTestBase,
    PackableStorage.PackableStorage,
    PackableStorage.PackableUndoStorage,
    Synchronization.SynchronizedStorage,
):
    """ZODB's pack tests, on a FileStorage whose packer is the child's."""

    def open(self, **kwargs: Any) -> None:
        self._storage = FileStorage("Data.fs", packer=child_packer.pack, **kwargs)

    def setUp(self) -> None:
        StorageTestBase.StorageTestBase.setUp(self)
        self.open(create=1)


def load_tests(
    loader: unittest.TestLoader, tests: Any, pattern: Any
) -> unittest.TestSuite:
    return loader.loadTestsFromTestCase(ChildPackedFileStorageTests)


def _records(path: str) -> list[tuple[bytes, list[tuple[bytes, bytes | None]]]]:
    """Every transaction of a Data.fs: its tid and its (oid, data) records."""
    found = []
    iterator = FileIterator(path)
    try:
        for txn in iterator:
            found.append((txn.tid, [(r.oid, r.data) for r in txn]))
    finally:
        iterator.close()
    return found


def _blob_files(blob_dir: str) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, name), blob_dir)
        for root, _, names in os.walk(blob_dir)
        for name in names
        if name.endswith(".blob")
    )


def _build(directory: str) -> tuple[str, str]:
    """A Data.fs with history, unreachable objects and blob revisions."""
    os.makedirs(directory)
    path = os.path.join(directory, "Data.fs")
    blobs = os.path.join(directory, "blobs")
    db = ZODB.DB(FileStorage(path, blob_dir=blobs))
    try:
        with db.transaction() as conn:
            root = conn.root()
            for number in range(40):
                root[number] = PersistentMapping(value=number)
            root["blob"] = Blob(b"first")
            root["doomed blob"] = Blob(b"goes")
        for round_ in range(5):
            with db.transaction() as conn:
                root = conn.root()
                for number in range(0, 40, round_ + 1):
                    root[number]["value"] = (round_, number)
                with root["blob"].open("w") as file:
                    file.write(b"revision %d" % round_)
        with db.transaction() as conn:
            root = conn.root()
            for number in range(30, 40):
                del root[number]  # garbage from here on
            del root["doomed blob"]
        time.sleep(0.01)
    finally:
        db.close()
    return path, blobs


def test_a_child_pack_leaves_what_filestorages_own_leaves(tmp_path: Any) -> None:
    path, blobs = _build(str(tmp_path / "built"))
    packed_by = {}
    for name, packer in [("ours", child_packer.pack), ("zodb", None)]:
        directory = tmp_path / name
        shutil.copytree(tmp_path / "built", directory)
        storage = FileStorage(
            str(directory / "Data.fs"), blob_dir=str(directory / "blobs"), packer=packer
        )
        try:
            storage.pack(time.time(), referencesf)
        finally:
            storage.close()
        packed_by[name] = (
            _records(str(directory / "Data.fs")),
            _blob_files(str(directory / "blobs")),
        )
    before = _records(path)
    assert sum(len(records) for _, records in packed_by["ours"][0]) < sum(
        len(records) for _, records in before
    )
    assert len(packed_by["ours"][1]) < len(_blob_files(blobs))
    assert packed_by["ours"] == packed_by["zodb"]


@pytest.fixture
def big_db(tmp_path: Any) -> Iterator[ZODB.DB]:
    """A database whose walk takes the child long enough to commit during it."""
    db = ZODB.DB(FileStorage(str(tmp_path / "Data.fs"), packer=child_packer.pack))
    with db.transaction() as conn:
        conn.root()["counter"] = PersistentMapping(n=0)
    for batch in range(8):
        with db.transaction() as conn:
            conn.root()[batch] = [PersistentMapping(value=i) for i in range(500)]
    for batch in range(4):
        with db.transaction() as conn:
            del conn.root()[batch]
    yield db
    db.close()


def test_commits_during_a_child_pack_are_kept(big_db: ZODB.DB) -> None:
    db, storage = big_db, big_db.storage
    packing = threading.Event()
    done = threading.Event()
    committed = []

    def commit() -> None:
        manager = transaction.TransactionManager()
        conn = db.open(transaction_manager=manager)
        packing.wait()
        while not done.is_set():
            conn.root()["counter"]["n"] += 1
            manager.commit()
            committed.append(conn.root()["counter"]["n"])
        conn.close()

    committer = threading.Thread(target=commit)
    committer.start()
    size = storage.getSize()
    try:
        packing.set()
        storage.pack(time.time(), referencesf)
    finally:
        done.set()
        committer.join()
    assert len(committed) >= 5, "the pack ended before commits could run"
    assert storage.getSize() < size
    check = db.open()
    assert check.root()["counter"]["n"] == committed[-1]
    assert sorted(key for key in check.root() if isinstance(key, int)) == list(
        range(4, 8)
    )
    check.close()
    fstest = subprocess.run(
        [sys.executable, "-m", "ZODB.scripts.fstest", storage._file_name],
        capture_output=True,
        text=True,
        check=False,
    )
    assert fstest.returncode == 0, fstest.stdout + fstest.stderr


def test_a_child_that_fails_leaves_the_storage_as_it_was(big_db: ZODB.DB) -> None:
    storage = big_db.storage
    path = storage._file_name
    last = storage.lastTransaction()
    # Damage the length of the first data record's transaction, far before
    # the pack time: the walk cannot go on.
    with open(path, "r+b") as file:
        file.seek(4 + 8)
        file.write(b"\xff" * 8)
    with open(path, "rb") as file:
        damaged = file.read()
    with pytest.raises(StorageError, match=f"packing {path} failed in the child"):
        storage.pack(time.time(), referencesf)
    with open(path, "rb") as file:
        assert file.read() == damaged
    assert not os.path.exists(path + ".pack")
    assert not os.path.exists(path + ".pack.index")
    assert storage.lastTransaction() == last
    assert u64(storage.load(b"\0" * 8)[1]) > 0  # still serving


def test_a_child_whose_server_has_gone_stops(tmp_path: Any) -> None:
    """The child's parent starts it on a file it cannot finish reading (a
    FIFO nobody writes) and exits; the child ends within seconds."""
    fifo = str(tmp_path / "Data.fs")
    os.mkfifo(fifo)
    starter = (
        "import json, os, subprocess, sys\n"
        "arguments = dict(path=sys.argv[1], blob_dir=None, stop='ff' * 8, gc=True,"
        " file_end=0, parent=os.getpid())\n"
        "child = subprocess.Popen([sys.executable, '-m', 'zodbserver.child_packer',"
        " json.dumps(arguments)])\n"
        "print(child.pid, flush=True)\n"
    )
    parent = subprocess.run(
        [sys.executable, "-c", starter, fifo],
        capture_output=True,
        text=True,
        check=True,
    )
    child = int(parent.stdout)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child), "the child packer outlived its server"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_server_packs_its_filestorages_in_a_child(tmp_path: Any) -> None:
    """Unless the zeo.conf names a packer: then that one, as with ZEO."""
    conf = tmp_path / "zeo.conf"
    conf.write_text(
        f"""
        <zeo>
          address 127.0.0.1:0
        </zeo>
        <filestorage 1>
          path {tmp_path / "one.fs"}
        </filestorage>
        <filestorage 2>
          path {tmp_path / "two.fs"}
          packer ZODB.FileStorage.FileStorage:FileStorage.packer
        </filestorage>
        """
    )
    storages = open_storages(load_config(conf))
    try:
        assert storages["1"].packer is child_packer.choose_packer
        assert storages["2"].packer is FileStorage.packer
    finally:
        for storage in storages.values():
            storage.close()


def test_the_child_reports_bad_arguments(tmp_path: Any) -> None:
    arguments = dict(
        path=str(tmp_path / "missing.fs"),
        blob_dir=None,
        stop="ff" * 8,
        gc=True,
        file_end=0,
        parent=os.getpid(),
    )
    child = subprocess.run(
        [sys.executable, "-m", "zodbserver.child_packer", json.dumps(arguments)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == 1
    assert "missing.fs" in child.stderr


@pytest.mark.parametrize(("threshold", "in_child"), [(0, True), (2**40, False)])
def test_only_files_past_the_threshold_go_to_a_child(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, threshold: int, in_child: bool
) -> None:
    children: list[str] = []
    run_child = child_packer._run_child

    def counting(path: str, *args: Any) -> int | None:
        children.append(path)
        return run_child(path, *args)

    monkeypatch.setattr(child_packer, "_run_child", counting)
    monkeypatch.setattr(child_packer, "CHILD_PACK_MIN_SIZE", threshold)
    path, _ = _build(str(tmp_path / "built"))
    storage = FileStorage(path)
    child_packer.install(storage)
    try:
        size = storage.getSize()
        storage.pack(time.time(), referencesf)
        assert storage.getSize() < size
    finally:
        storage.close()
    assert children == ([path] if in_child else [])
