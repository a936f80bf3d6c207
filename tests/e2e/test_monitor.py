"""The monitor of a running server: metrics, health checks, status JSON.

Real clients (ZEO 6's ClientStorage, which sends one ``loadBefore`` per
cache miss, so loads can be counted exactly) load, commit, abort, conflict
and move a blob through a server with a monitor; every counter of
``/metrics`` -- parsed with prometheus_client's own parser -- moves by what
was done.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import transaction
import ZODB
from BTrees.Length import Length
from persistent.mapping import PersistentMapping
from ZEO.ClientStorage import ClientStorage
from ZODB.blob import Blob
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage
from ZODB.POSException import ConflictError
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle
from ZODB.utils import z64

from support.monitoring import (
    LOCAL,
    MonitoredServer,
    Scrape,
    get,
    holder_and_waiter,
    status,
)
from support.waiting import wait_until
from zodbserver.server.monitor import Monitor
from zodbserver.server.settings import ServerSettings
from zodbserver.server.thread import ServerThread

BLOB_SIZE = 300_000
COUNTERS = ("loads", "stores", "commits", "aborts", "conflicts", "conflicts_resolved")
HISTOGRAMS = (
    "zodbserver_commit_lock_wait_seconds",
    "zodbserver_commit_lock_hold_seconds",
    "zodbserver_vote_seconds",
    "zodbserver_finish_seconds",
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[MonitoredServer]:
    server = MonitoredServer(tmp_path)
    yield server
    server.close()


def commit_objects(db: ZODB.DB, count: int) -> list[bytes]:
    """``count`` new objects, one transaction each; their oids."""
    oids = []
    connection = db.open()
    try:
        for number in range(count):
            obj = PersistentMapping(number=number)
            connection.root()[f"o{number}"] = obj
            transaction.commit()
            oids.append(obj._p_oid)
    finally:
        connection.close()
    return oids


def test_counters_move_by_what_clients_did(
    served: MonitoredServer, tmp_path: Path
) -> None:
    writer = served.client(tmp_path / "writer-blobs")
    db = ZODB.DB(writer)
    try:
        # Commits: each histogram counts every commit.
        before = served.scrape()
        oids = commit_objects(db, 3)
        after = served.scrape()
        assert after.delta(before, "zodbserver_commits_total", storage="1") == 3
        # Each commit stores the new object and the root.
        assert after.delta(before, "zodbserver_stores_total", storage="1") == 6
        commits = after.storage("zodbserver_commits_total")
        for histogram in HISTOGRAMS:
            assert after.types[histogram] == "histogram"
            assert after.storage(f"{histogram}_count") == commits
            assert after.value(f"{histogram}_bucket", storage="1", le="+Inf") == commits
        assert after.storage("zodbserver_vote_seconds_sum") > 0

        # Loads: a reader with an empty cache loads each object once.
        reader = served.client(tmp_path / "reader-blobs")
        before = served.scrape()
        for oid in oids:
            reader.load(oid)
        after = served.scrape()
        assert after.delta(before, "zodbserver_loads_total", storage="1") == len(oids)
        assert after.storage("zodbserver_connections") == 2

        # An abort the client asks for counts; a failed vote does not (ZEO).
        before = served.scrape()
        metadata = TransactionMetaData()
        writer.tpc_begin(metadata)
        writer.store(writer.new_oid(), z64, zodb_pickle(MinPO(1)), "", metadata)
        writer.tpc_abort(metadata)
        stale = TransactionMetaData()
        writer.tpc_begin(stale)
        writer.store(oids[0], z64, zodb_pickle(MinPO(2)), "", stale)
        with pytest.raises(ConflictError):
            writer.tpc_vote(stale)
        writer.tpc_abort(stale)
        after = served.scrape()
        assert after.delta(before, "zodbserver_aborts_total", storage="1") == 1
        assert after.delta(before, "zodbserver_conflicts_total", storage="1") == 1
        assert after.delta(before, "zodbserver_commits_total", storage="1") == 0

        # A conflict the server resolves.
        reader_db = ZODB.DB(reader)
        try:
            connection = db.open()
            connection.root()["length"] = Length()
            transaction.commit()
            connection.close()
            before = served.scrape()
            managers = [transaction.TransactionManager() for _ in range(2)]
            connections = [
                some_db.open(manager)
                for some_db, manager in zip((db, reader_db), managers, strict=True)
            ]
            wait_until(
                lambda: "length" in connections[1].root(), "the reader sees the Length"
            )
            for connection, manager in zip(connections, managers, strict=True):
                manager.begin()
                connection.root()["length"].change(1)
            for manager in managers:
                manager.commit()
            for connection in connections:
                connection.close()
            after = served.scrape()
            assert (
                after.delta(before, "zodbserver_conflicts_resolved_total", storage="1")
                == 1
            )
        finally:
            reader_db.close()
    finally:
        db.close()


def test_blob_bytes_and_traffic(served: MonitoredServer, tmp_path: Path) -> None:
    payload = os.urandom(BLOB_SIZE)
    db = ZODB.DB(served.client(tmp_path / "writer-blobs"))
    try:
        before = served.scrape()
        connection = db.open()
        blob = Blob(payload)
        connection.root()["blob"] = blob
        transaction.commit()
        oid = blob._p_oid
        connection.close()
        uploaded = served.scrape()
        assert (
            uploaded.delta(before, "zodbserver_blob_uploaded_bytes_total") == BLOB_SIZE
        )
        assert uploaded.delta(before, "zodbserver_received_bytes_total") > BLOB_SIZE
        assert uploaded.storage("zodbserver_blob_directory_size_bytes") >= BLOB_SIZE

        reader = served.client(tmp_path / "reader-blobs")
        serial = reader.lastTransaction()
        with open(reader.loadBlob(oid, serial), "rb") as stream:
            assert stream.read() == payload
        downloaded = served.scrape()
        assert (
            downloaded.delta(uploaded, "zodbserver_blob_downloaded_bytes_total")
            == BLOB_SIZE
        )
        assert downloaded.delta(uploaded, "zodbserver_sent_bytes_total") > BLOB_SIZE
    finally:
        db.close()
    scrape = served.scrape()
    assert scrape.storage("zodbserver_storage_size_bytes") == served.path.stat().st_size
    assert scrape.storage("zodbserver_objects") == 2  # the root and the blob
    assert (
        abs(
            scrape.storage("zodbserver_last_transaction_timestamp_seconds")
            - time.time()
        )
        < 600
    )
    assert scrape.value("process_resident_memory_bytes") > 0
    assert scrape.value("process_open_fds") > 0
    assert scrape.value("zodbserver_ready") == 1


def raw_connection(address: tuple[str, int], first: bytes) -> None:
    """Connect, send ``first``, and wait for the server to close."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(first)
        while sock.recv(65536):
            pass


def test_refusals_and_protocol_errors_by_kind(served: MonitoredServer) -> None:
    assert isinstance(served.address, tuple)
    before = served.scrape()
    # A TLS ClientHello on this plain port.
    raw_connection(served.address, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    # A frame too large, then one that does not decode.
    raw_connection(served.address, b"\xff\xff\xff\xff")
    raw_connection(served.address, b"\x00\x00\x00\x02M5\x00\x00\x00\x03\xc1\xc1\xc1")
    after = served.scrape()
    refused = "zodbserver_connections_refused_total"
    errors = "zodbserver_protocol_errors_total"
    assert after.delta(before, refused, reason="tls_on_plain_port") == 1
    assert after.delta(before, errors, kind="frame_too_large") == 1
    assert after.delta(before, errors, kind="malformed") == 1
    assert after.types["zodbserver_protocol_errors"] == "counter"


def test_status_json_lists_clients_and_the_lock(
    served: MonitoredServer, tmp_path: Path
) -> None:
    holder = served.client(tmp_path / "a")
    served.client(tmp_path / "b")
    metadata = TransactionMetaData()
    holder.tpc_begin(metadata)
    holder.store(holder.new_oid(), z64, zodb_pickle(MinPO(1)), "", metadata)
    holder.tpc_vote(metadata)
    try:
        response = get(served.monitor, "/status.json")
        assert response.status == 200
        assert response.content_type == "application/json"
        status = json.loads(response.body)
        (storage,) = status["storages"]
        assert status["state"] == "serving"
        assert len(storage["clients"]) == 2
        holding = [client for client in storage["clients"] if client["holds_lock"]]
        assert len(holding) == 1
        assert holding[0]["transaction"] == "voted"
        assert storage["lock"]["holder"] == holding[0]["label"]
        assert storage["lock"]["held_for"] >= 0
        assert storage["active_transactions"] == 1
        assert storage["blob_directory"] == str(served.blob_dir)
    finally:
        holder.tpc_finish(metadata)
    status = json.loads(get(served.monitor, "/status.json").body)
    (storage,) = status["storages"]
    assert storage["lock"]["holder"] is None
    (commit,) = storage["slowest_commits"]
    assert commit["objects"] == 1
    assert commit["bytes"] == len(zodb_pickle(MinPO(1)))
    assert commit["hold"] >= commit["vote"]


def test_transactions_the_lock_queue_and_the_invalidation_queue(
    served: MonitoredServer, tmp_path: Path
) -> None:
    """One client holds the commit lock (voted), another waits for it: two
    active transactions, one waiting; once both commit, nothing is active
    or waiting and the invalidation queue holds two more transactions."""
    idle = served.scrape()
    assert idle.storage("zodbserver_active_transactions") == 0
    assert idle.storage("zodbserver_commit_lock_waiting") == 0
    assert idle.storage("zodbserver_commit_lock_held_seconds") == 0
    queued = idle.storage("zodbserver_invalidation_queue_length")
    with holder_and_waiter(served, tmp_path):
        busy = served.scrape()
        assert busy.storage("zodbserver_active_transactions") == 2
        assert busy.storage("zodbserver_commit_lock_waiting") == 1
        assert busy.storage("zodbserver_commit_lock_held_seconds") > 0
        assert busy.storage("zodbserver_invalidation_queue_length") == queued
    done = served.scrape()
    assert done.delta(idle, "zodbserver_commits_total", storage="1") == 2
    assert done.storage("zodbserver_active_transactions") == 0
    assert done.storage("zodbserver_commit_lock_waiting") == 0
    assert done.storage("zodbserver_commit_lock_held_seconds") == 0
    assert done.storage("zodbserver_invalidation_queue_length") == queued + 2
    # A transaction aborted after its vote adds nothing to the queue.
    client = served.client(tmp_path / "aborting-blobs")
    metadata = TransactionMetaData()
    client.tpc_begin(metadata)
    client.store(client.new_oid(), z64, zodb_pickle(MinPO(1)), "", metadata)
    client.tpc_vote(metadata)
    assert served.scrape().storage("zodbserver_active_transactions") == 1
    client.tpc_abort(metadata)
    aborted = served.scrape()
    assert aborted.storage("zodbserver_active_transactions") == 0
    assert aborted.storage("zodbserver_invalidation_queue_length") == queued + 2


def test_status_json_shows_the_queue_behind_the_lock_holder(
    served: MonitoredServer, tmp_path: Path
) -> None:
    with holder_and_waiter(served, tmp_path) as lock:
        storage = status(served)
        clients = {client["label"]: client for client in storage["clients"]}
        assert lock.holder != lock.waiter
        assert storage["lock"]["holder"] == lock.holder
        assert storage["lock"]["queue"] == [lock.waiter]
        assert storage["waiting"] == 1
        assert storage["active_transactions"] == 2
        holder, waiter = clients[lock.holder], clients[lock.waiter]
        assert (holder["holds_lock"], holder["waiting_for_lock"]) == (True, False)
        assert holder["transaction"] == "voted"
        assert (waiter["holds_lock"], waiter["waiting_for_lock"]) == (False, True)
        assert waiter["transaction"] is not None
    storage = status(served)
    assert storage["lock"] == {"holder": None, "held_for": None, "queue": []}
    assert storage["waiting"] == 0
    waited = {commit["client"]: commit for commit in storage["slowest_commits"]}
    assert set(waited) == {lock.holder, lock.waiter}
    # The waiter's commit counts the time it queued behind the holder.
    assert waited[lock.waiter]["wait"] > 0
    assert all(client["transaction"] is None for client in storage["clients"])


#: The slow-commit line (``commit_times.CommitTimes.record``).
SLOW_COMMIT = re.compile(
    r"slow commit by (?P<client>.+): held the commit lock (?P<hold>\d+\.\d{3}) s "
    r"\((?P<objects>\d+) objects, (?P<bytes>\d+) bytes; "
    r"waited (?P<wait>\d+\.\d{3}) s for the lock, "
    r"vote (?P<vote>\d+\.\d{3}) s, finish (?P<finish>\d+\.\d{3}) s, "
    r"the rest waiting for the client\)"
)


def test_slow_commits_are_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the commit that held the lock past the threshold is logged, with
    the client's label, its objects and bytes, and where the time went --
    the figures the status page lists for that commit."""
    served = MonitoredServer(tmp_path, slow_commit_threshold=0.5)
    record = zodb_pickle(MinPO(1))
    try:
        client = served.client(tmp_path / "blobs-client")
        (label,) = [c["label"] for c in status(served)["clients"]]
        for pause, stores in ((0.0, 1), (0.8, 2)):
            metadata = TransactionMetaData()
            client.tpc_begin(metadata)
            for _ in range(stores):
                client.store(client.new_oid(), z64, record, "", metadata)
            client.tpc_vote(metadata)
            time.sleep(pause)
            client.tpc_finish(metadata)
        slowest = status(served)["slowest_commits"][0]
    finally:
        served.close()
    slow = [r for r in caplog.records if r.getMessage().startswith("slow commit")]
    assert len(slow) == 1, [r.getMessage() for r in slow]
    assert slow[0].levelname == "WARNING"
    message = slow[0].getMessage()
    logged = SLOW_COMMIT.fullmatch(message)
    assert logged is not None, message
    assert logged["client"] == label
    assert int(logged["objects"]) == 2
    assert int(logged["bytes"]) == 2 * len(record)
    hold = float(logged["hold"])
    assert hold >= 0.8
    # The vote is part of the hold; the lock is released as the finish starts.
    assert float(logged["vote"]) <= hold
    # The line and the status page report the same commit.
    assert slowest["client"] == label
    assert (slowest["objects"], slowest["bytes"]) == (2, 2 * len(record))
    for part in ("hold", "wait", "vote", "finish"):
        assert logged[part] == f"{slowest[part]:.3f}", part


def test_ready_only_between_open_storages_and_shutdown(tmp_path: Path) -> None:
    """``/ready``: 503 while the storages open, 200 while serving, 503 while
    shutting down (a vote in the storage keeps shutdown waiting)."""
    monitor = Monitor(LOCAL)
    address = monitor.start()
    assert isinstance(address, tuple)
    try:
        starting = get(address, "/ready")
        assert (starting.status, starting.text) == (503, "starting\n")
        assert get(address, "/live").status == 200
        assert get(address, "/").status == 503
        assert json.loads(get(address, "/status.json").body) == {"state": "starting"}
        assert Scrape(address).value("zodbserver_ready") == 0

        voting = threading.Event()
        release = threading.Event()
        storage = _VoteBlockingStorage(str(tmp_path / "Data.fs"), voting, release)
        thread = ServerThread(
            {"1": storage}, ServerSettings(address=LOCAL), monitor=monitor
        )
        server_address = thread.start()
        assert get(address, "/ready").status == 200
        assert get(address, "/live").status == 200

        client = ClientStorage(server_address, wait_timeout=10)
        metadata = TransactionMetaData()
        client.tpc_begin(metadata)
        client.store(client.new_oid(), z64, zodb_pickle(MinPO(1)), "", metadata)
        vote = threading.Thread(target=_vote_quietly, args=(client, metadata))
        vote.start()
        assert voting.wait(10)
        stopper = threading.Thread(target=thread.stop)
        stopper.start()
        try:
            wait_until(
                lambda: get(address, "/ready").status == 503, "not ready on shutdown"
            )
            assert get(address, "/ready").text == "shutting down\n"
            assert get(address, "/live").status == 200
            assert Scrape(address).value("zodbserver_ready") == 0
        finally:
            release.set()
            stopper.join(60)
            vote.join(60)
            client.close()
        assert get(address, "/ready").status == 503
    finally:
        monitor.close()
    with pytest.raises(ConnectionRefusedError):
        get(address, "/live")


class _VoteBlockingStorage(FileStorage):
    """A FileStorage whose vote waits until the test lets it go on."""

    def __init__(self, path: str, voting: threading.Event, release: threading.Event):
        super().__init__(path)
        self._voting = voting
        self._release = release

    def tpc_vote(self, transaction: object) -> object:
        self._voting.set()
        assert self._release.wait(60)
        return super().tpc_vote(transaction)


def _vote_quietly(client: ClientStorage, metadata: TransactionMetaData) -> None:
    """Vote while the server shuts down; whatever the outcome, abort, which
    closes the client's transaction buffer."""
    with contextlib.suppress(Exception):
        client.tpc_vote(metadata)
    client.tpc_abort(metadata)


def test_methods_and_paths(served: MonitoredServer) -> None:
    assert get(served.monitor, "/nothing").status == 404
    assert get(served.monitor, "/metrics", method="POST").status == 405
    head = get(served.monitor, "/metrics", method="HEAD")
    assert (head.status, head.body) == (200, b"")
    page = get(served.monitor, "/")
    assert page.status == 200
    assert page.content_type == "text/html; charset=utf-8"
    assert '<meta http-equiv="refresh"' in page.text
