"""Server processes on RelStorage: a ``zeo.conf`` with ``<relstorage>``,
a server SIGKILLed under load, PostgreSQL restarted under the servers."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import transaction
import ZEO
import ZODB
import ZODB.blob
import ZODB.FileStorage
from persistent.mapping import PersistentMapping

from support.database import RelStorageServers
from support.postgres import PostgresServer
from support.server_processes import ServerProcess
from support.waiting import wait_until
from zodbserver.client.storage import ClientStorage

WRITERS = 4


@contextlib.contextmanager
def _processes(servers: RelStorageServers, count: int) -> Iterator[list[ServerProcess]]:
    processes = []
    for index in range(count):
        directory = servers.directory / f"server{index}"
        directory.mkdir()
        processes.append(
            ServerProcess(
                "ours",
                directory,
                storage_section=servers.zeo_conf(f"process{index}"),
                zeo_lines=("database-poll-interval 0.05",),
            )
        )
    try:
        for process in processes:
            process.start()
        yield processes
    finally:
        for process in processes:
            process.stop()


class Writer:
    """Increments a counter of its own, one commit at a time, through a
    client that knows every server; counts what was acknowledged and what
    failed without an answer (it may or may not have committed)."""

    def __init__(self, db: ZODB.DB, index: int) -> None:
        self.db = db
        self.index = index
        self.acknowledged = 0
        self.unknown = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        manager = transaction.TransactionManager()
        connection = self.db.open(manager)
        while not self.stop.is_set():
            try:
                manager.begin()
                connection.root()["counters"][self.index]["n"] += 1
                manager.commit()
            except Exception as error:  # a failover, or the set-up not seen yet
                self.errors.append(type(error).__name__)
                self.unknown += 1
                with contextlib.suppress(Exception):
                    manager.abort()
                time.sleep(0.05)
            else:
                self.acknowledged += 1
        connection.close()


def _set_up(db: ZODB.DB) -> None:
    with db.transaction() as connection:
        connection.root()["counters"] = [PersistentMapping(n=0) for _ in range(WRITERS)]


def _counters(db: ZODB.DB) -> list[int]:
    with db.transaction() as connection:
        connection.sync()
        return [counter["n"] for counter in connection.root()["counters"]]


def test_a_zeo_conf_with_a_relstorage_section(hp_servers: RelStorageServers) -> None:
    with _processes(hp_servers, 1) as [process]:
        db = ZODB.DB(ClientStorage(process.address, wait_timeout=30))
        try:
            with db.transaction() as connection:
                connection.root()["x"] = "through a zeoserver process"
            assert db.storage.getName() != ""
        finally:
            db.close()
        # What it committed is in the database, for any RelStorage.
        direct = ZODB.DB(hp_servers.storage("direct"))
        try:
            with direct.transaction() as connection:
                assert connection.root()["x"] == "through a zeoserver process"
        finally:
            direct.close()


def test_clients_carry_on_through_another_server_when_one_is_killed(
    hp_servers: RelStorageServers,
) -> None:
    with _processes(hp_servers, 2) as processes:
        addresses = [process.address for process in processes]
        dbs: list[ZODB.DB] = [
            ZODB.DB(ClientStorage(addresses, wait_timeout=30))
            for _ in range(WRITERS - 1)
        ]
        # ZEO 6's client, with the same list.
        dbs.append(ZODB.DB(ZEO.client(addresses, wait_timeout=30)))
        try:
            _set_up(dbs[0])
            writers = [Writer(db, index) for index, db in enumerate(dbs)]
            for writer in writers:
                writer.thread.start()
            wait_until(
                lambda: all(writer.acknowledged >= 5 for writer in writers),
                "every writer to commit",
                timeout=60,
            )
            processes[0].kill()
            before = [writer.acknowledged for writer in writers]
            wait_until(
                lambda: all(
                    writer.acknowledged >= done + 10
                    for writer, done in zip(writers, before, strict=True)
                ),
                "every writer to commit through the surviving server",
                timeout=120,
            )
            for writer in writers:
                writer.stop.set()
            for writer in writers:
                writer.thread.join(60)
            survivor = ZODB.DB(ClientStorage(addresses[1], wait_timeout=30))
            try:
                found = _counters(survivor)
            finally:
                survivor.close()
            for writer, count in zip(writers, found, strict=True):
                # Nothing acknowledged is lost; a commit whose answer the
                # kill took may be there or not.
                assert (
                    writer.acknowledged <= count <= writer.acknowledged + writer.unknown
                )
        finally:
            for db in dbs:
                db.close()


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    """A PostgreSQL server this test alone restarts."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


def test_servers_reconnect_when_postgresql_restarts(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    servers = RelStorageServers(own_postgres, tmp_path)
    with _processes(servers, 1) as [process]:
        db = ZODB.DB(ClientStorage(process.address, wait_timeout=30))
        try:
            _set_up(db)
            manager = transaction.TransactionManager()
            connection = db.open(manager)
            for _ in range(5):
                connection.root()["counters"][0]["n"] += 1
                manager.commit()
            own_postgres.kill()
            failures: list[str] = []
            for _ in range(3):
                try:
                    connection.root()["counters"][0]["n"] += 1
                    manager.commit()
                except Exception as error:  # what the client sees
                    failures.append(str(error))
                    manager.abort()
            # Every commit failed, with an error that says why.
            assert len(failures) == 3
            own_postgres.start()

            def commits() -> bool:
                try:
                    connection.root()["counters"][0]["n"] += 1
                    manager.commit()
                except Exception:  # until it reconnects
                    manager.abort()
                    return False
                return True

            wait_until(commits, "a commit after PostgreSQL is back", timeout=60)
            connection.close()
            assert _counters(db)[0] == 6
        finally:
            db.close()


def test_a_data_fs_moves_into_the_database_and_back(
    hp_servers: RelStorageServers, tmp_path: Path
) -> None:
    """docs/database.md's zodbconvert, both ways, served in between."""
    source = tmp_path / "source"
    source.mkdir()
    original = ZODB.DB(
        ZODB.FileStorage.FileStorage(
            str(source / "Data.fs"), blob_dir=str(source / "blobs")
        )
    )
    with original.transaction() as connection:
        connection.root()["pages"] = PersistentMapping(front="welcome")
        blob = ZODB.blob.Blob(b"an attachment")
        connection.root()["file"] = blob
    with original.transaction() as connection:
        connection.root()["pages"]["about"] = "us"
    original.close()

    relstorage = hp_servers.zeo_conf("convert").replace(
        "<relstorage 1>", "<relstorage>"
    )
    into = tmp_path / "into.conf"
    into.write_text(
        relstorage.replace("<relstorage>", "<relstorage destination>", 1).replace(
            "%import relstorage\n",
            "%import relstorage\n"
            f"<filestorage source>\n  path {source / 'Data.fs'}\n"
            f"  blob-dir {source / 'blobs'}\n</filestorage>\n",
        )
    )
    zodbconvert = Path(sys.executable).parent / "zodbconvert"
    subprocess.run([str(zodbconvert), str(into)], check=True, capture_output=True)

    with _processes(hp_servers, 1) as [process]:
        db = ZODB.DB(
            ClientStorage(
                process.address, wait_timeout=30, blob_dir=str(tmp_path / "cache")
            )
        )
        try:
            with db.transaction() as connection:
                root = connection.root()
                assert dict(root["pages"]) == {"front": "welcome", "about": "us"}
                with root["file"].open() as file:
                    assert file.read() == b"an attachment"
                root["pages"]["served"] = "by zodbserver"
        finally:
            db.close()

    back = tmp_path / "back"
    back.mkdir()
    out = tmp_path / "out.conf"
    out.write_text(
        relstorage.replace("<relstorage>", "<relstorage source>", 1).replace(
            "%import relstorage\n",
            "%import relstorage\n"
            f"<filestorage destination>\n  path {back / 'Data.fs'}\n"
            f"  blob-dir {back / 'blobs'}\n</filestorage>\n",
        )
    )
    subprocess.run([str(zodbconvert), str(out)], check=True, capture_output=True)
    returned = ZODB.DB(
        ZODB.FileStorage.FileStorage(
            str(back / "Data.fs"), blob_dir=str(back / "blobs")
        )
    )
    try:
        with returned.transaction() as connection:
            root = connection.root()
            assert root["pages"]["served"] == "by zodbserver"
            with root["file"].open() as file:
                assert file.read() == b"an attachment"
        # Every transaction came along, with its tid.
        assert len(list(returned.storage.iterator())) == 4
    finally:
        returned.close()
