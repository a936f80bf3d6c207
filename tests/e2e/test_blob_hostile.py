"""Hostile and broken blob calls against a real server over raw sockets.

Shared-directory blob names that try to leave the blob directory, blob
chunks and ends without a start, a start outside any transaction, and
clients that vanish in the middle of an upload.  Each test checks the
refusal (the vote fails with an error naming it), that nothing was
committed, that no file appeared anywhere it should not, that the upload's
temporary file is gone, and that other clients are still served
(``assert_intact``: a raw bystander is answered, and ZEO 6's client commits
and reads a blob back).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ZODB
from test_hostile_input import (
    MAXTID,
    POS_KEY_ERROR,
    PROMPTLY,
    TRANSACTION_ERROR,
    Z64,
    RawClient,
    record,
)
from ZEO.ClientStorage import ClientStorage as ZEOClientStorage
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage

from support.waiting import wait_until
from zodbserver.protocol import ErrorReply
from zodbserver.server.thread import ServerThread

CHUNK = 59000


def files_under(directory: Path) -> set[Path]:
    return {path for path in directory.rglob("*") if path.is_file()}


@dataclass
class BlobServer:
    root: Path
    storage: FileStorage
    address: Any
    bystander: RawClient

    @property
    def blob_dir(self) -> Path:
        return Path(self.storage.blob_dir)

    @property
    def upload_dir(self) -> Path:
        return Path(self.storage.temporaryDirectory())

    def registered(self) -> RawClient:
        client = RawClient(self.address)
        client.result("register", "1", False)
        return client

    def tids(self) -> list[bytes]:
        return [txn.tid for txn in self.storage.iterator()]

    def uploads(self) -> list[Path]:
        return sorted(self.upload_dir.iterdir())

    def assert_intact(self) -> None:
        """Others are still served, and a normal blob commit still works."""
        assert self.bystander.result("ping") is None
        storage = ZEOClientStorage(
            self.address, blob_dir=str(self.root / "zeo-cache"), wait_timeout=PROMPTLY
        )
        db = ZODB.DB(storage)
        try:
            with db.transaction() as connection:
                blob = Blob(b"still fine" * 10_000)
                connection.root()["check"] = blob
            with (
                db.transaction() as connection,
                connection.root()["check"].open() as file,
            ):
                assert file.read() == b"still fine" * 10_000
        finally:
            db.close()
        assert self.uploads() == []


@pytest.fixture
def server(tmp_path: Path) -> Iterator[BlobServer]:
    storage = FileStorage(str(tmp_path / "Data.fs"), blob_dir=str(tmp_path / "blobs"))
    with ServerThread({"1": storage}) as address, RawClient(address) as bystander:
        bystander.result("register", "1", False)
        yield BlobServer(tmp_path, storage, address, bystander)


def assert_vote_refused(client: RawClient, token: int, *words: str) -> None:
    event = client.call("vote", token)
    assert isinstance(event, ErrorReply), event
    assert event.class_name == TRANSACTION_ERROR, event
    for word in words:
        assert word in str(event.payload), event
    assert client.result("tpc_abort", token) is None


def assert_unknown_oid(client: RawClient, oid: bytes) -> None:
    event = client.call("loadBefore", oid, MAXTID)
    assert isinstance(event, ErrorReply), event
    assert event.class_name == POS_KEY_ERROR


# -- shared-directory names ---------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("../escape.tmp", id="parent"),
        pytest.param("../../../../../../../../../../escape.tmp", id="far-parent"),
        pytest.param("..", id="dotdot"),
        pytest.param("..tmp", id="dotdot-tmp"),
        pytest.param("sub/dir.tmp", id="slash"),
        pytest.param("ABSOLUTE", id="absolute"),
        pytest.param("1234567890.blob", id="not-tmp"),
        pytest.param("evil.tmp-x", id="two-extra-characters"),
        pytest.param("evil\0.tmp", id="nul-inside"),
        pytest.param("evil.tmp\0", id="nul-last"),
        pytest.param("", id="empty"),
    ],
)
def test_shared_blob_name_is_refused(server: BlobServer, name: str) -> None:
    outside = server.root / "outside"
    outside.mkdir()
    if name == "ABSOLUTE":
        name = str(outside / "evil.tmp")
    tids = server.tids()
    with server.registered() as client:
        oid = client.result("new_oids", 1)[0]
        oid_dir = Path(server.storage.fshelper.getPathForOID(oid, create=True))
        # Put a file where the name would point, so that an accepted name
        # would visibly move it into the storage.
        target = oid_dir / name.replace("\0", "")
        if name and not name.endswith(".."):
            target = Path(os.path.normpath(target))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"planted")
        before = files_under(server.root)
        client.call_async("tpc_begin", 1, b"", b"", {})
        client.call_async("storea", oid, Z64, record("shared"), 1)
        client.call_async("storeBlobShared", oid, Z64, record("shared"), name, 1)
        assert_vote_refused(client, 1, "refused shared blob file name")
        assert_unknown_oid(client, oid)
    assert server.tids() == tids
    assert files_under(server.root) == before  # nothing moved, nothing created
    server.assert_intact()


def test_a_proper_shared_blob_name_is_accepted(server: BlobServer) -> None:
    """The control for the refusals above: the same calls with a good name."""
    with server.registered() as client:
        oid = client.result("new_oids", 1)[0]
        oid_dir = Path(server.storage.fshelper.getPathForOID(oid, create=True))
        (oid_dir / "0123456789ABCDEF.tmp-").write_bytes(b"shared bytes")
        client.call_async("tpc_begin", 1, b"", b"", {})
        client.call_async("storea", oid, Z64, record("shared"), 1)
        name = "0123456789ABCDEF.tmp-"
        client.call_async("storeBlobShared", oid, Z64, record("shared"), name, 1)
        assert client.result("vote", 1) == ()
        tid = client.result("tpc_finish", 1)
    path = server.storage.loadBlob(oid, tid)
    assert Path(path).read_bytes() == b"shared bytes"
    assert Path(path).parent == oid_dir
    server.assert_intact()


def test_a_shared_blob_file_that_is_not_there_fails_the_vote(
    server: BlobServer,
) -> None:
    """A client that does not share the server's blob directory (but says
    it does) gets a vote error that says so, and nothing commits."""
    tids = server.tids()
    with server.registered() as client:
        oid = client.result("new_oids", 1)[0]
        client.call_async("tpc_begin", 1, b"", b"", {})
        client.call_async("storea", oid, Z64, record("shared"), 1)
        name = "0123456789ABCDEF.tmp-"
        client.call_async("storeBlobShared", oid, Z64, record("shared"), name, 1)
        assert_vote_refused(client, 1, "does the client share this server's blob")
        assert_unknown_oid(client, oid)
    assert server.tids() == tids
    server.assert_intact()


# -- streamed uploads out of order ---------------------------------------------


def test_store_blob_end_without_start(server: BlobServer) -> None:
    tids = server.tids()
    with server.registered() as client, server.registered() as other:
        oid = client.result("new_oids", 1)[0]
        client.call_async("tpc_begin", 1, b"", b"", {})
        client.call_async("storea", oid, Z64, record("end"), 1)
        client.call_async("storeBlobEnd", oid, Z64, record("end"), 1)
        # Another client commits meanwhile, undisturbed.
        other_oid = other.result("new_oids", 1)[0]
        other.call_async("tpc_begin", 1, b"", b"", {})
        other.call_async("storea", other_oid, Z64, record("other"), 1)
        assert other.result("vote", 1) == ()
        other_tid = other.result("tpc_finish", 1)
        assert_vote_refused(client, 1, "storeBlobEnd without storeBlobStart")
        assert_unknown_oid(client, oid)
    assert server.tids() == [*tids, other_tid]
    server.assert_intact()


def test_store_blob_chunk_without_start(server: BlobServer) -> None:
    tids = server.tids()
    with server.registered() as client:
        oid = client.result("new_oids", 1)[0]
        client.call_async("tpc_begin", 1, b"", b"", {})
        client.call_async("storeBlobChunk", b"x" * 1000)
        client.call_async("storea", oid, Z64, record("chunk"), 1)
        assert_vote_refused(client, 1, "storeBlobChunk without storeBlobStart")
        assert_unknown_oid(client, oid)
        assert server.uploads() == []
    assert server.tids() == tids
    server.assert_intact()


def test_store_blob_start_without_a_transaction(server: BlobServer) -> None:
    tids = server.tids()
    with server.registered() as client:
        client.call_async("storeBlobStart")
        client.call_async("storeBlobChunk", b"stray " * 1000)
        assert client.result("ping") is None
        assert server.uploads() == []
        assert server.tids() == tids
        # The stray calls leave nothing behind: a proper upload afterwards
        # commits exactly its own bytes.
        oid = client.result("new_oids", 1)[0]
        client.call_async("tpc_begin", 1, b"", b"", {})
        client.call_async("storea", oid, Z64, record("blob"), 1)
        client.call_async("storeBlobStart")
        client.call_async("storeBlobChunk", b"a" * CHUNK)
        client.call_async("storeBlobChunk", b"b")
        client.call_async("storeBlobEnd", oid, Z64, record("blob"), 1)
        assert client.result("vote", 1) == ()
        tid = client.result("tpc_finish", 1)
    assert Path(server.storage.loadBlob(oid, tid)).read_bytes() == b"a" * CHUNK + b"b"
    server.assert_intact()


# -- clients that vanish -----------------------------------------------------------


def _start_upload(client: RawClient, chunks: int) -> bytes:
    oid = client.result("new_oids", 1)[0]
    client.call_async("tpc_begin", 1, b"", b"", {})
    client.call_async("storea", oid, Z64, record("upload"), 1)
    client.call_async("storeBlobStart")
    for _ in range(chunks):
        client.call_async("storeBlobChunk", os.urandom(CHUNK))
    assert client.result("ping") is None  # all of that has been handled
    return oid


def test_disconnect_mid_upload_removes_the_temporary_file(server: BlobServer) -> None:
    tids = server.tids()
    blobs_before = files_under(server.blob_dir)
    with server.registered() as client:
        oid = _start_upload(client, chunks=20)
        # A worker thread writes the chunks, after the loop has read them.
        wait_until(
            lambda: [path.stat().st_size for path in server.uploads()] == [20 * CHUNK],
            "the chunks are written",
            timeout=PROMPTLY,
        )
    wait_until(
        lambda: server.uploads() == [], "the upload file is removed", timeout=PROMPTLY
    )
    assert server.tids() == tids
    assert files_under(server.blob_dir) == blobs_before
    with server.registered() as client:
        assert_unknown_oid(client, oid)
    server.assert_intact()


def test_disconnect_after_store_blob_end_removes_the_upload(
    server: BlobServer,
) -> None:
    tids = server.tids()
    blobs_before = files_under(server.blob_dir)
    with server.registered() as client:
        oid = _start_upload(client, chunks=3)
        client.call_async("storeBlobEnd", oid, Z64, record("upload"), 1)
        assert client.result("ping") is None
        # Finished (once its writes are done), waiting for the vote.
        wait_until(
            lambda: len(server.uploads()) == 1, "the upload's file", timeout=PROMPTLY
        )
    wait_until(
        lambda: server.uploads() == [], "the upload file is removed", timeout=PROMPTLY
    )
    assert server.tids() == tids
    assert files_under(server.blob_dir) == blobs_before
    server.assert_intact()


def test_disconnect_after_the_vote_leaves_no_blob(server: BlobServer) -> None:
    tids = server.tids()
    blobs_before = files_under(server.blob_dir)
    with server.registered() as client:
        oid = _start_upload(client, chunks=3)
        client.call_async("storeBlobEnd", oid, Z64, record("upload"), 1)
        assert client.result("vote", 1) == ()  # holds the commit lock
    # The abort runs once the server notices; then the lock is free again.
    wait_until(
        lambda: files_under(server.blob_dir) == blobs_before,
        "the voted blob is removed",
        timeout=PROMPTLY,
    )
    assert server.uploads() == []
    assert server.tids() == tids
    server.assert_intact()


def test_chunk_of_the_wrong_type_mid_upload(server: BlobServer) -> None:
    """Junk in an upload fails the transaction at its vote and removes the
    upload file; the connection keeps serving its client."""
    tids = server.tids()
    with server.registered() as client:
        _start_upload(client, chunks=2)
        wait_until(
            lambda: len(server.uploads()) == 1, "the upload's file", timeout=PROMPTLY
        )
        client.call_async("storeBlobChunk", 12345)
        assert client.result("ping") is None  # still connected
        event = client.call("vote", 1)
        assert isinstance(event, ErrorReply), event
        assert event.class_name == "builtins.TypeError", event
        assert "storeBlobChunk" in repr(event.payload), event
        wait_until(
            lambda: server.uploads() == [], "the upload is removed", timeout=PROMPTLY
        )
        assert client.result("tpc_abort", 1) is None
    assert server.tids() == tids
    server.assert_intact()


def test_send_blob_for_a_missing_blob(server: BlobServer) -> None:
    with server.registered() as client:
        event = client.call("sendBlob", b"\0" * 7 + b"\x63", b"\0" * 8)
        assert isinstance(event, ErrorReply), event
        assert event.class_name == POS_KEY_ERROR
        assert client.result("ping") is None
    server.assert_intact()
