"""Reading a server's monitor over HTTP, as a scraper or a probe does."""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from ZEO.ClientStorage import ClientStorage
from ZODB.FileStorage import FileStorage

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
