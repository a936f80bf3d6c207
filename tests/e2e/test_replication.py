"""A replica follows its primary: every transaction, record and blob, in
order; it serves its own clients read-only, with invalidations; it resumes
after a lost connection; a pack reaches it; it can be promoted."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import transaction
import ZEO
import ZODB
from BTrees.Length import Length
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage
from ZODB.POSException import StorageError

from support.raw_client import RawClient
from support.replicas import (
    file_storage,
    last_tid,
    replication_status,
    same_history,
    wait_caught_up,
)
from support.server_processes import ServerProcess
from support.waiting import wait_until
from zodbserver.client import ClientStorage
from zodbserver.config import ServerConfig, filestorage
from zodbserver.peer_call import call
from zodbserver.protocol import ErrorReply
from zodbserver.rejoin import rejoin
from zodbserver.server.settings import ServerSettings
from zodbserver.server.thread import ServerThread


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[tuple[Any, FileStorage]]:
    storage = file_storage(tmp_path / "primary")
    with ServerThread({"1": storage}) as address:
        yield address, storage


def replica_thread(
    directory: Path, primary_address: Any, **options: Any
) -> tuple[ServerThread, FileStorage]:
    storage = file_storage(directory)
    return ServerThread(
        {"1": storage}, replicate_from=primary_address, **options
    ), storage


def mixed_workload(address: Any, blob_dir: Path) -> None:
    """Commits, a conflict resolved, an undo and blobs, through ZEO's client."""
    db = ZODB.DB(ZEO.client(address, blob_dir=str(blob_dir), wait_timeout=30))
    other = ZODB.DB(ZEO.client(address, blob_dir=str(blob_dir) + "-2", wait_timeout=30))
    try:
        with db.transaction("setup") as conn:
            root = conn.root()
            root["tree"] = OOBTree()
            root["counter"] = Length()
            root["blob"] = Blob(b"first blob " * 1000)
            root["mapping"] = PersistentMapping()
        for number in range(20):
            with db.transaction(f"commit {number}") as conn:
                conn.root()["tree"][number] = "x" * number
        # A conflict resolved by Length's _p_resolveConflict.
        first = db.open(transaction.TransactionManager())
        second = other.open(transaction.TransactionManager())
        first.root()["counter"].change(1)
        second.root()["counter"].change(2)
        first.transaction_manager.commit()
        second.transaction_manager.commit()
        first.close()
        second.close()
        with db.transaction("a new blob revision") as conn:
            conn.root()["blob"] = Blob(b"second blob " * 5000)
        with db.transaction("to undo") as conn:
            conn.root()["mapping"]["undo me"] = 1
        undo_id = db.undoLog(0, 1)[0]["id"]
        db.undo(undo_id)
        transaction.commit()
    finally:
        db.close()
        other.close()


def test_a_replica_holds_what_the_primary_holds(
    tmp_path: Path, primary: tuple[Any, FileStorage]
) -> None:
    address, primary_storage = primary
    mixed_workload(address, tmp_path / "client-blobs")
    replica, replica_storage = replica_thread(tmp_path / "replica", address)
    with replica as replica_address:
        wait_caught_up(address, replica_address)
        # ... and follows what comes after.
        mixed_workload(address, tmp_path / "client-blobs-2")
        wait_caught_up(address, replica_address)
        status = replication_status(address)["storages"]["1"]["replicas"]
        assert [r["state"] for r in status] == ["following"]
        replica_status = replication_status(replica_address)
        assert replica_status["role"] == "replica"
        assert replica_status["storages"]["1"]["primary"]["state"] == "following"
    differences = same_history(primary_storage, replica_storage)
    assert differences == []
    assert len(list(primary_storage.iterator())) > 25


def test_replica_clients_read_only_with_invalidations(
    tmp_path: Path, primary: tuple[Any, FileStorage]
) -> None:
    address, _ = primary
    writer = ZODB.DB(ClientStorage(address, wait_timeout=30))
    replica, _ = replica_thread(tmp_path / "replica", address)
    with replica as replica_address:
        with writer.transaction() as conn:
            conn.root()["value"] = 1
        wait_caught_up(address, replica_address)
        with RawClient(replica_address) as raw:
            refusal = raw.call("register", "1", False)
            assert isinstance(refusal, ErrorReply), refusal
            assert refusal.class_name.endswith("ReadOnlyError")
        reader = ZODB.DB(
            ZEO.client(replica_address, read_only_fallback=True, wait_timeout=30)
        )
        try:
            conn = reader.open()
            assert conn.root()["value"] == 1
            with writer.transaction() as wconn:
                wconn.root()["value"] = 2

            def sees_two() -> bool:
                conn.transaction_manager.begin()
                return bool(conn.root()["value"] == 2)

            wait_until(sees_two, "the replica's client to see the new value")
            conn.close()
        finally:
            reader.close()
    writer.close()


def test_a_replica_resumes_after_losing_its_primary(tmp_path: Path) -> None:
    primary_storage = file_storage(tmp_path / "primary")
    primary = ServerThread({"1": primary_storage})
    address = primary.start()
    replica, replica_storage = replica_thread(tmp_path / "replica", address)
    with replica as replica_address:
        db = ZODB.DB(ClientStorage(address, wait_timeout=30))
        for number in range(10):
            with db.transaction() as conn:
                conn.root()[number] = number
        db.close()
        wait_caught_up(address, replica_address)
        primary.stop()
        # The primary comes back on the same address with the same storage.
        primary_storage = file_storage(tmp_path / "primary")
        primary = ServerThread({"1": primary_storage}, address=address)
        primary.start()
        db = ZODB.DB(ClientStorage(address, wait_timeout=30))
        for number in range(10, 20):
            with db.transaction() as conn:
                conn.root()[number] = number
        db.close()
        wait_caught_up(address, replica_address)
    primary.stop()
    primary_storage = FileStorage(str(tmp_path / "primary" / "Data.fs"), read_only=True)
    replica_storage = FileStorage(str(tmp_path / "replica" / "Data.fs"), read_only=True)
    try:
        assert same_history(primary_storage, replica_storage) == []
    finally:
        primary_storage.close()
        replica_storage.close()


def test_a_pack_on_the_primary_reaches_the_replica(
    tmp_path: Path, primary: tuple[Any, FileStorage]
) -> None:
    address, primary_storage = primary
    db = ZODB.DB(ClientStorage(address, wait_timeout=30))
    for number in range(10):
        with db.transaction() as conn:
            conn.root()["value"] = "x" * 1000 * number
    replica, replica_storage = replica_thread(tmp_path / "replica", address)
    with replica as replica_address:
        wait_caught_up(address, replica_address)
        size_before = replica_storage.getSize()
        db.pack(time.time() + 1)
        wait_until(
            lambda: replica_storage.getSize() < size_before,
            "the replica to pack",
        )
        with db.transaction() as conn:
            conn.root()["after pack"] = True
        wait_caught_up(address, replica_address)
    db.close()
    assert same_history(primary_storage, replica_storage) == []


def test_a_promoted_replica_takes_writes(
    tmp_path: Path, primary: tuple[Any, FileStorage]
) -> None:
    address, _ = primary
    db = ZODB.DB(ClientStorage(address, wait_timeout=30))
    with db.transaction() as conn:
        conn.root()["value"] = 1
    replica, _ = replica_thread(tmp_path / "replica", address)
    with replica as replica_address:
        wait_caught_up(address, replica_address)
        db.close()
        answer = call(replica_address, "promote")
        assert answer["storages"]["1"]["epoch"] == 2
        status = replication_status(replica_address)
        assert status["role"] == "primary"
        assert [e[0] for e in status["storages"]["1"]["history"]] == [1, 2]
        promoted = ZODB.DB(ClientStorage(replica_address, wait_timeout=30))
        with promoted.transaction() as conn:
            assert conn.root()["value"] == 1
            conn.root()["value"] = 2
        promoted.close()
        assert last_tid(replica_address) > last_tid(address)
    state = (tmp_path / "replica" / "Data.fs.replication").read_text()
    assert '[2, "' in state


def test_a_replaced_primary_is_fenced_then_rejoins(tmp_path: Path) -> None:
    primary_dir, replica_dir = tmp_path / "primary", tmp_path / "replica"
    primary = ServerThread({"1": file_storage(primary_dir)})
    address = primary.start()
    replica = ServerThread({"1": file_storage(replica_dir)}, replicate_from=address)
    replica_address = replica.start()
    commit_values(address, range(5))
    wait_caught_up(address, replica_address)
    replica.stop()
    commit_values(address, range(5, 8))  # the primary's own, never replicated
    primary.stop()

    # The replica is promoted while the primary is gone.
    replica = ServerThread(
        {"1": file_storage(replica_dir)},
        replicate_from=address,
        address=replica_address,
    )
    replica.start()
    assert call(replica_address, "promote")["storages"]["1"]["epoch"] == 2
    branch = last_tid(replica_address)
    commit_values(replica_address, range(100, 102))

    # The old primary comes back as a primary: it asks its former replica,
    # learns of the promotion and stays read-only.
    primary = ServerThread({"1": file_storage(primary_dir)}, address=address)
    primary.start()
    wait_until(
        lambda: replication_status(address)["storages"]["1"]["stale"],
        "the old primary to find out it was replaced",
    )
    with RawClient(address) as raw:
        refusal = raw.call("register", "1", False)
        assert isinstance(refusal, ErrorReply), refusal
    primary.stop()

    # rejoin moves its own three transactions aside ...
    config = ServerConfig(
        settings=ServerSettings(replicate_from=replica_address),
        storages=(
            filestorage("1", str(primary_dir / "Data.fs"), str(primary_dir / "blobs")),
        ),
    )
    assert rejoin(config) == 0
    aside = list(primary_dir.glob("Data.fs.diverged-*"))
    aside_files = [
        p for p in aside if p.suffix not in (".blobs", ".lock", ".index", ".tmp")
    ]
    assert len(aside_files) == 1, aside
    moved = FileStorage(str(aside_files[0]), read_only=True)
    try:
        assert len(list(moved.iterator())) == 3
    finally:
        moved.close()
    cut = FileStorage(str(primary_dir / "Data.fs"), read_only=True)
    try:
        assert cut.lastTransaction().hex() == branch
    finally:
        cut.close()

    # ... and it follows the new primary.
    primary = ServerThread(
        {"1": file_storage(primary_dir)},
        replicate_from=replica_address,
        address=address,
    )
    primary.start()
    commit_values(replica_address, range(200, 203))
    wait_caught_up(replica_address, address)
    primary.stop()
    replica.stop()
    first = FileStorage(str(primary_dir / "Data.fs"), read_only=True)
    second = FileStorage(str(replica_dir / "Data.fs"), read_only=True)
    try:
        assert same_history(first, second) == []
    finally:
        first.close()
        second.close()


def commit_values(address: Any, keys: Any) -> None:
    db = ZODB.DB(ClientStorage(address, wait_timeout=30))
    try:
        for key in keys:
            with db.transaction() as conn:
                conn.root()[key] = key
    finally:
        db.close()


def test_sync_replicas_refuses_a_commit_no_replica_can_confirm(tmp_path: Path) -> None:
    storage = file_storage(tmp_path / "primary")
    with ServerThread(
        {"1": storage}, sync_replicas=1, sync_replicas_timeout=0.5
    ) as address:
        client = ClientStorage(address, wait_timeout=30)
        try:
            # The database's first commit, of its root, is refused.
            with pytest.raises(StorageError, match="sync-replicas is 1"):
                ZODB.DB(client)
        finally:
            client.close()
    assert not list(storage.iterator())


def test_sync_replicas_async_mode_commits_without_replicas(tmp_path: Path) -> None:
    storage = file_storage(tmp_path / "primary")
    with ServerThread(
        {"1": storage},
        sync_replicas=1,
        sync_replicas_timeout=0.2,
        sync_replicas_missing="async",
    ) as address:
        commit_values(address, ["a", "b"])
        status = replication_status(address)["storages"]["1"]
        assert not status["replicas"]
        assert status["unconfirmed_commits"] == 3  # the root's, a's and b's
    assert len(list(storage.iterator())) == 3


def test_sync_replicas_acknowledges_once_the_replica_has_it(
    tmp_path: Path,
) -> None:
    storage = file_storage(tmp_path / "primary")
    with ServerThread(
        {"1": storage}, sync_replicas=1, sync_replicas_timeout=10
    ) as address:
        replica, _ = replica_thread(tmp_path / "replica", address)
        with replica as replica_address:
            wait_until(
                lambda: replication_status(address)["storages"]["1"]["replicas"],
                "the replica to connect",
            )
            db = ZODB.DB(ClientStorage(address, wait_timeout=30))
            try:
                for number in range(20):
                    with db.transaction() as conn:
                        conn.root()[number] = number
                    # Acknowledged: the replica has it already.
                    assert last_tid(replica_address) >= db.lastTransaction().hex()
            finally:
                db.close()


def test_a_zeo_server_is_no_primary(tmp_path: Path) -> None:
    """The stream is our extension: a replica pointed at ZEO 6 says the
    primary refused it, and serves its own storage read-only meanwhile."""
    (tmp_path / "zeo").mkdir()
    with ServerProcess("zeo", tmp_path / "zeo") as zeo_server:
        zeo_address = zeo_server.start()
        replica, _ = replica_thread(tmp_path / "replica", zeo_address)
        with replica as replica_address:

            def refused() -> Any:
                primary = replication_status(replica_address)["storages"]["1"][
                    "primary"
                ]
                return primary["state"] == "refused" and primary["error"]

            error = wait_until(refused, "the replica to give up on ZEO")
            assert "not a server that replicates" in error


def test_no_one_sees_a_sync_commit_before_a_replica_has_it(tmp_path: Path) -> None:
    """The committer's answer, other clients' invalidations and reads all
    wait for the replica's acknowledgement: a commit the loss of the
    primary could take back is seen by no one."""
    storage = file_storage(tmp_path / "primary")
    with ServerThread({"1": storage}) as address:
        commit_values(address, ["setup"])
    with (
        ServerThread(
            {"1": file_storage(tmp_path / "primary")},
            sync_replicas=1,
            sync_replicas_timeout=30,
        ) as address,
        RawClient(address) as fake_replica,
    ):
        last = bytes.fromhex(last_tid(address))
        fake_replica.result("register", "1", True)
        answer = fake_replica.result(
            "replicate", {"history": [[1, "00" * 8]], "last_tid": last, "address": ""}
        )
        assert answer["verdict"] == "follow"
        wait_until(
            lambda: (
                replication_status(address)["storages"]["1"]["replicas"][0]["state"]
                == "following"
            ),
            "the fake replica to follow",
        )
        reader = ZODB.DB(ClientStorage(address, wait_timeout=30))
        writer = ZODB.DB(ClientStorage(address, wait_timeout=30))
        try:
            done = threading.Event()

            def commit() -> None:
                with writer.transaction() as conn:
                    conn.root()["value"] = "unconfirmed"
                done.set()

            committing = threading.Thread(target=commit)
            committing.start()
            # The replica is sent the transaction ...
            tid = fake_replica.async_call("replicate_end").args[0]
            # ... and until it says it has it, no one else knows of it.
            time.sleep(0.3)
            assert not done.is_set()
            assert last_tid(address) == last.hex()
            with reader.transaction() as conn:
                assert "value" not in conn.root()
            fake_replica.call_async("replicated", tid)
            assert done.wait(10)
            committing.join()
            assert last_tid(address) == tid.hex()

            def reader_sees_it() -> bool:
                with reader.transaction() as conn:
                    return bool(conn.root().get("value") == "unconfirmed")

            wait_until(reader_sees_it, "the reader to see the confirmed commit")
        finally:
            reader.close()
            writer.close()
