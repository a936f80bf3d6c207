"""Our client's private blob cache (``blobs.BlobFiles``) under pressure.

The size limit prunes the least recently used files below the limit but
never a file someone is reading or downloading; two processes sharing one
cache directory never see a partial file; and what a crash leaves behind
(a half-written ``.dl`` download, a ``.lock`` file) does not get in the
way.  The server is ours, in a thread, over a FileStorage with blobs.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import transaction
import zc.lockfile
import ZODB
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage
from ZODB.utils import p64

from zodbserver.client import ClientStorage
from zodbserver.client.blobs import BlobCacheLayout, BlobFiles
from zodbserver.server.thread import ServerThread

#: Bound on every wait here.
PATIENCE = 60.0


def content(number: int, size: int) -> bytes:
    return random.Random(number).randbytes(size)


def cache_path(cache: Path, oid: bytes, serial: bytes) -> str:
    return os.path.join(cache, BlobCacheLayout().getBlobFilePath(oid, serial))


def cache_bytes(cache: Path) -> int:
    return sum(path.stat().st_size for path in cache.rglob("*.blob"))


@pytest.fixture
def address(tmp_path: Path) -> Iterator[Any]:
    storage = FileStorage(str(tmp_path / "Data.fs"), blob_dir=str(tmp_path / "blobs"))
    with ServerThread({"1": storage}) as address:
        yield address


@pytest.fixture
def make_client(address: Any, tmp_path: Path) -> Iterator[Callable[..., ClientStorage]]:
    clients: list[ClientStorage] = []

    def make(cache: str = "cache", **options: Any) -> ClientStorage:
        client = ClientStorage(
            address, blob_dir=str(tmp_path / cache), wait_timeout=PATIENCE, **options
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def commit_blobs(
    make_client: Callable[..., ClientStorage], sizes: list[int]
) -> list[tuple[bytes, bytes, bytes]]:
    """Commit one blob per size; return (oid, serial, data) for each."""
    db = ZODB.DB(make_client("writer-cache"))
    try:
        manager = transaction.TransactionManager()
        connection = db.open(manager)
        blobs = []
        for number, size in enumerate(sizes):
            blob = Blob(content(number, size))
            connection.root()[number] = blob
            blobs.append((blob, content(number, size)))
        manager.commit()
        for blob, _ in blobs:
            blob._p_activate()  # committed blobs are ghosts
        committed = [(blob._p_oid, blob._p_serial, data) for blob, data in blobs]
        connection.close()
    finally:
        db.close()
    return committed


def read(client: ClientStorage, oid: bytes, serial: bytes) -> bytes:
    with client.openCommittedBlobFile(oid, serial) as file:
        return bytes(file.read())


# -- the size limit -------------------------------------------------------------


def test_size_limit_prunes_least_recently_used_below_the_limit(
    make_client: Callable[..., ClientStorage], tmp_path: Path
) -> None:
    blobs = commit_blobs(make_client, [100_000] * 10)
    limit = 350_000
    client = make_client(blob_cache_size=limit, blob_cache_size_check=10)
    cache = tmp_path / "cache"
    for oid, serial, data in blobs:
        assert read(client, oid, serial) == data
        assert cache_bytes(cache) <= limit
    # The most recently read ones are the ones left.
    kept = {str(path) for path in cache.rglob("*.blob")}
    assert kept == {cache_path(cache, oid, serial) for oid, serial, _ in blobs[-3:]}


def test_prune_keeps_a_file_open_for_reading(
    make_client: Callable[..., ClientStorage],
) -> None:
    blobs = commit_blobs(make_client, [100_000] * 6)
    client = make_client(blob_cache_size=250_000, blob_cache_size_check=10)
    (first_oid, first_serial, first_data), *others = blobs
    with client.openCommittedBlobFile(first_oid, first_serial) as file:
        path = file.name
        head = file.read(1000)
        for oid, serial, data in others:
            assert read(client, oid, serial) == data
        # The oldest file, but open: still there, and whole.
        assert os.path.exists(path)
        assert head + file.read() == first_data
    assert read(client, first_oid, first_serial) == first_data


def test_a_blob_larger_than_the_whole_limit_still_loads(
    make_client: Callable[..., ClientStorage],
) -> None:
    ((oid, serial, data),) = commit_blobs(make_client, [500_000])
    client = make_client(blob_cache_size=100_000, blob_cache_size_check=10)
    assert read(client, oid, serial) == data
    path = client.loadBlob(oid, serial)
    assert Path(path).read_bytes() == data


def test_prune_skips_a_directory_being_downloaded(tmp_path: Path) -> None:
    """A download holds its directory's lock: prune neither waits for it
    nor touches the files there, and does the rest of its job."""
    files = BlobFiles(str(tmp_path / "cache"), cache_size=1000, size_check=10)
    busy_oid, idle_oid = p64(5), p64(6)  # different directories
    for oid in (busy_oid, idle_oid):
        files.helper.createPathForOID(oid)
        files.receive_start(oid, p64(1))
        files.receive_chunk(oid, p64(1), b"x" * 600)
        files.receive_stop(oid, p64(1))
        os.utime(files.filename(oid, p64(1)), (1, 1))  # long unused
    downloading = files.filename(busy_oid, p64(2)) + ".dl"
    lock = zc.lockfile.LockFile(os.path.join(os.path.dirname(downloading), ".lock"))
    try:
        files.receive_start(busy_oid, p64(2))
        files.receive_chunk(busy_oid, p64(2), b"partial")
        started = time.monotonic()
        files.prune(0)
        assert time.monotonic() - started < 5.0
        assert Path(downloading).read_bytes() == b"partial"
        assert os.path.exists(files.filename(busy_oid, p64(1)))
        assert not os.path.exists(files.filename(idle_oid, p64(1)))
    finally:
        files.close()
        lock.close()


def test_chunks_after_the_loader_gave_up_still_complete_the_file(
    tmp_path: Path,
) -> None:
    """A download keeps its file open between chunks; if the loading thread
    stops waiting (its lock released), later chunks append to the same
    file and the stop still renames the whole of it into place."""
    files = BlobFiles(str(tmp_path / "cache"))
    oid, tid = p64(7), p64(3)
    try:
        with files.download_lock(oid, tid):
            files.receive_start(oid, tid)
            files.receive_chunk(oid, tid, b"first ")
        files.receive_chunk(oid, tid, b"second")
        files.receive_stop(oid, tid)
        assert Path(files.filename(oid, tid)).read_bytes() == b"first second"
        assert files.cached(oid, tid) == files.filename(oid, tid)
    finally:
        files.close()


# -- leftovers of a crash -----------------------------------------------------------


def test_half_written_download_is_replaced(
    make_client: Callable[..., ClientStorage], tmp_path: Path
) -> None:
    ((oid, serial, data),) = commit_blobs(make_client, [3 * 59000 + 7])
    client = make_client()
    final = Path(cache_path(tmp_path / "cache", oid, serial))
    final.parent.mkdir(parents=True, exist_ok=True)
    # A crash mid-download: a partial .dl and the directory's .lock file.
    Path(str(final) + ".dl").write_bytes(data[:70000] + b"garbage")
    (final.parent / ".lock").write_text("12345\n")
    assert read(client, oid, serial) == data
    assert final.read_bytes() == data
    assert not Path(str(final) + ".dl").exists()


def test_prune_removes_downloads_abandoned_by_a_crash(tmp_path: Path) -> None:
    files = BlobFiles(str(tmp_path / "cache"), cache_size=10_000, size_check=10)
    oid = p64(7)
    files.helper.createPathForOID(oid)
    abandoned = Path(files.filename(oid, p64(3)) + ".dl")
    abandoned.write_bytes(b"half of a blob")
    files.prune(10_000)
    assert not abandoned.exists()


# -- two processes, one cache directory ------------------------------------------

#: Reads every blob ``rounds`` times through a small shared cache, checking
#: each read against its SHA-256; prints {"reads": n, "errors": [...]}.
READER_SCRIPT = r"""
import hashlib, json, sys
from zodbserver.client import ClientStorage

options = json.loads(sys.argv[1])
address = options["address"]
address = tuple(address) if isinstance(address, list) else address
client = ClientStorage(
    address, blob_dir=options["cache"], wait_timeout=60,
    blob_cache_size=options["limit"], blob_cache_size_check=10,
)
reads, errors = 0, []
try:
    for round_number in range(options["rounds"]):
        blobs = options["blobs"]
        if (round_number + options["number"]) % 2:
            blobs = blobs[::-1]
        for oid, serial, digest in blobs:
            try:
                with client.openCommittedBlobFile(
                    bytes.fromhex(oid), bytes.fromhex(serial)
                ) as file:
                    got = hashlib.sha256(file.read()).hexdigest()
                if got != digest:
                    errors.append(f"{oid}: wrong content")
            except Exception as exc:
                errors.append(f"{oid}: {exc!r}")
            reads += 1
finally:
    client.close()
print(json.dumps({"reads": reads, "errors": errors[:10]}), flush=True)
"""


def test_two_processes_share_one_cache_directory(
    make_client: Callable[..., ClientStorage], address: Any, tmp_path: Path
) -> None:
    import hashlib

    blobs = commit_blobs(make_client, [150_000 + n for n in range(6)])
    listed = [
        [oid.hex(), serial.hex(), hashlib.sha256(data).hexdigest()]
        for oid, serial, data in blobs
    ]
    rounds = 8
    children = []
    for number in range(2):
        options = {
            "address": address,
            "cache": str(tmp_path / "shared-cache"),
            "limit": 400_000,  # room for about two of the six
            "rounds": rounds,
            "blobs": listed,
            "number": number,
        }
        children.append(
            subprocess.Popen(
                [sys.executable, "-c", READER_SCRIPT, json.dumps(options)],
                stdout=subprocess.PIPE,
            )
        )
    outcomes = []
    for child in children:
        try:
            out, _ = child.communicate(timeout=PATIENCE)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
        assert child.returncode == 0
        outcomes.append(json.loads(out))
    assert outcomes == [{"reads": rounds * len(blobs), "errors": []}] * 2
    assert not list((tmp_path / "shared-cache").rglob("*.dl"))
