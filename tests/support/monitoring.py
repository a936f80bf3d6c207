"""Reading a server's monitor over HTTP, as a scraper or a probe does."""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from ZEO.ClientStorage import ClientStorage
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle
from ZODB.utils import z64

from support.waiting import wait_until
from zodbserver.server.monitor import Monitor
from zodbserver.server.settings import ServerSettings
from zodbserver.server.thread import ServerThread

LOCAL = ("127.0.0.1", 0)

#: A sample's labels, as a sorted tuple of (name, value).
Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


def get(address: tuple[str, int], path: str, *, method: str = "GET") -> Response:
    """One request to the monitor at ``address`` (any status, no raising)."""
    connection = http.client.HTTPConnection(*address, timeout=30)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return Response(
            response.status, response.getheader("Content-Type", ""), response.read()
        )
    finally:
        connection.close()


class Scrape:
    """``/metrics`` parsed with prometheus_client's own parser."""

    def __init__(self, address: tuple[str, int]) -> None:
        response = get(address, "/metrics")
        assert response.status == 200, response
        assert response.content_type.startswith("text/plain; version=0.0.4")
        self.text = response.text
        self.samples: dict[str, dict[Labels, float]] = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(self.text):
            self.types[family.name] = family.type
            for sample in family.samples:
                labels = tuple(sorted(sample.labels.items()))
                self.samples.setdefault(sample.name, {})[labels] = sample.value

    def value(self, name: str, *, default: float | None = None, **labels: str) -> float:
        """The sample ``name`` with exactly ``labels``; ``default`` if there
        is none (a labelled counter shows no sample until it counts)."""
        key = tuple(sorted(labels.items()))
        found = self.samples.get(name, {})
        if key in found:
            return found[key]
        assert default is not None, f"no sample {name}{labels} in:\n{self.text}"
        return default

    def delta(self, before: Scrape, name: str, **labels: str) -> float:
        """How much a counter moved since ``before`` (0 where unseen)."""
        return self.value(name, default=0, **labels) - before.value(
            name, default=0, **labels
        )

    def storage(self, name: str, storage: str = "1") -> float:
        return self.value(name, storage=storage)


class MonitoredServer:
    """A server thread over a FileStorage with blobs, with a monitor that
    measures blob directories at every scrape, and ZEO 6 clients."""

    def __init__(self, tmp_path: Path, **settings: object) -> None:
        self.path = tmp_path / "Data.fs"
        self.blob_dir = tmp_path / "blobs"
        storage = FileStorage(str(self.path), blob_dir=str(self.blob_dir))
        # Blob directory sizes measured at every scrape.
        self._monitor = Monitor(LOCAL, blob_size_interval=0)
        monitor = self._monitor.start()
        assert isinstance(monitor, tuple)
        self.monitor = monitor
        self.thread = ServerThread(
            {"1": storage},
            ServerSettings(address=LOCAL, **settings),  # type: ignore[arg-type]
            monitor=self._monitor,
        )
        self.address = self.thread.start()
        self._clients: list[ClientStorage] = []

    def client(self, blob_dir: Path) -> ClientStorage:
        client = ClientStorage(self.address, blob_dir=str(blob_dir), wait_timeout=10)
        self._clients.append(client)
        return client

    def scrape(self) -> Scrape:
        return Scrape(self.monitor)

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.thread.stop()
        self._monitor.close()


def status(served: MonitoredServer) -> dict[str, Any]:
    """``/status.json`` of ``served``'s one storage."""
    response = get(served.monitor, "/status.json")
    assert response.status == 200, response
    (storage,) = json.loads(response.body)["storages"]
    assert isinstance(storage, dict)
    return storage


@dataclass(frozen=True)
class LockQueue:
    """The labels of a client holding the commit lock and of one waiting
    for it behind the holder."""

    holder: str
    waiter: str


def _store_one(client: ClientStorage, metadata: TransactionMetaData) -> None:
    client.tpc_begin(metadata)
    client.store(client.new_oid(), z64, zodb_pickle(MinPO(1)), "", metadata)


@contextlib.contextmanager
def holder_and_waiter(served: MonitoredServer, tmp_path: Path) -> Iterator[LockQueue]:
    """Two new clients of ``served``, each with a one-object transaction:
    the holder has voted (it holds the commit lock), the waiter is voting
    (waiting for the lock).  On leaving, the holder finishes, the waiter's
    vote then returns and it finishes too: two commits."""
    holder = served.client(tmp_path / "holder-blobs")
    waiter = served.client(tmp_path / "waiter-blobs")
    held = TransactionMetaData()
    _store_one(holder, held)
    holder.tpc_vote(held)
    (holder_label,) = [c["label"] for c in status(served)["clients"] if c["holds_lock"]]
    waiting = TransactionMetaData()
    _store_one(waiter, waiting)
    with ThreadPoolExecutor(1) as executor:
        vote = executor.submit(waiter.tpc_vote, waiting)
        try:
            queue = wait_until(
                lambda: status(served)["lock"]["queue"], "a client waiting for the lock"
            )
            assert len(queue) == 1, queue
            yield LockQueue(holder_label, queue[0])
        finally:
            holder.tpc_finish(held)
            vote.result(30)
    waiter.tpc_finish(waiting)
