"""Our servers on RelStorage over one PostgreSQL database, in this process.

``RelStorageServers`` makes the database, then starts as many servers on
it as a test asks for (each with a RelStorage storage of its own, as
separate machines would have) and opens clients of them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import ZODB
from relstorage.adapters.postgresql import PostgreSQLAdapter
from relstorage.options import Options
from relstorage.storage import RelStorage

from support.postgres import PostgresServer
from zodbserver.client.storage import ClientStorage
from zodbserver.server.thread import ServerThread

#: Per PostgreSQL server and history mode, a database with RelStorage's
#: schema installed and nothing stored, to copy (``new_database``).
_templates: dict[tuple[int, bool], str] = {}


def new_database(postgres: PostgresServer, *, keep_history: bool = True) -> str:
    """A new database with RelStorage's schema: a copy of a template made
    once, which is much faster than installing the schema each time."""
    key = (id(postgres), keep_history)
    if key not in _templates:
        template = postgres.new_database()
        options = Options(keep_history=keep_history)
        storage = RelStorage(
            PostgreSQLAdapter(dsn=postgres.dsn(template), options=options),
            options=options,
        )
        storage.close()
        _templates[key] = template
    return postgres.new_database(template=_templates[key])


class RelStorageServers:
    def __init__(
        self, postgres: PostgresServer, directory: Path, *, keep_history: bool = True
    ) -> None:
        self.postgres = postgres
        self.directory = directory
        self.keep_history = keep_history
        self.database = new_database(postgres, keep_history=keep_history)
        self.dsn = postgres.dsn(self.database)
        self.threads: list[ServerThread] = []
        self.addresses: list[Any] = []
        self._closing: list[Any] = []

    def storage(self, name: str) -> RelStorage:
        """A RelStorage on the database, its blobs kept in the database
        (the blob directory is only a cache of this process)."""
        options = Options(
            keep_history=self.keep_history,
            blob_dir=str(self.directory / f"blobcache-{name}"),
            shared_blob_dir=False,
        )
        return RelStorage(
            PostgreSQLAdapter(dsn=self.dsn, options=options), options=options
        )

    def zeo_conf(self, name: str) -> str:
        """The storage as a ``zeo.conf`` section, as an operator writes it."""
        return (
            "%import relstorage\n"
            "<relstorage 1>\n"
            f"  keep-history {'true' if self.keep_history else 'false'}\n"
            f"  blob-dir {self.directory / f'blobcache-{name}'}\n"
            "  shared-blob-dir false\n"
            "  <postgresql>\n"
            f"    dsn {self.dsn}\n"
            "  </postgresql>\n"
            "</relstorage>\n"
        )

    def start(self, **settings: Any) -> Any:
        """Start one more server on the database; its address."""
        name = str(len(self.threads))
        server = ServerThread(
            {"1": self.storage(name)}, address=("127.0.0.1", 0), **settings
        )
        address = server.start()
        self.threads.append(server)
        self.addresses.append(address)
        return address

    def client(self, address: Any, **options: Any) -> ClientStorage:
        storage = ClientStorage(
            address,
            wait_timeout=30,
            blob_dir=str(self.directory / f"client-blobs-{len(self._closing)}"),
            **options,
        )
        self._closing.append(storage)
        return storage

    def db(self, address: Any, **options: Any) -> ZODB.DB:
        db = ZODB.DB(self.client(address, **options))
        self._closing.append(db)
        return db

    def stop(self, index: int) -> None:
        self.threads[index].stop()

    def stop_all(self) -> None:
        for closing in reversed(self._closing):
            # Some are closed already, with their server.
            with contextlib.suppress(Exception):
                closing.close()
        self._closing.clear()
        for server in self.threads:
            server.stop()
        self.threads.clear()
