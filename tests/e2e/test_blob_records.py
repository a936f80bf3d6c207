"""A blob revision is one data record: ZEO's client sends its record both
as a store and with the blob, and the server stores it once -- so the
transaction has one record per object, as FileStorage's check of its
index file expects of the last transaction when it opens (two records of
one oid there make it rebuild the index from the whole file)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import ZEO
import ZODB
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage

from zodbserver.client import ClientStorage
from zodbserver.server.thread import ServerThread


@pytest.mark.parametrize("kind", ["zeo", "ours"])
def test_one_record_per_blob_revision(tmp_path: Path, kind: str) -> None:
    storage = FileStorage(str(tmp_path / "Data.fs"), blob_dir=str(tmp_path / "blobs"))
    with ServerThread({"1": storage}) as address:
        client_blobs = str(tmp_path / "client-blobs")
        client = (
            ZEO.client(address, blob_dir=client_blobs, wait_timeout=30)
            if kind == "zeo"
            else ClientStorage(address, blob_dir=client_blobs, wait_timeout=30)
        )
        db = ZODB.DB(client)
        try:
            with db.transaction() as conn:
                conn.root()["blob"] = Blob(b"the first revision")
            with db.transaction() as conn, conn.root()["blob"].open("w") as stream:
                stream.write(b"the second revision")
            with db.transaction() as conn, conn.root()["blob"].open() as stream:
                assert stream.read() == b"the second revision"
        finally:
            db.close()
    reopened = FileStorage(
        str(tmp_path / "Data.fs"), blob_dir=str(tmp_path / "blobs"), read_only=True
    )
    try:
        for transaction in reopened.iterator():
            oids = Counter(record.oid for record in transaction)
            assert max(oids.values()) == 1, (transaction.tid, oids)
    finally:
        reopened.close()
