"""A system under test: one client kind against one server (or a FileStorage).

The matrix is ZEO's client and ours, each against ZEO's server and ours,
plus ZODB's FileStorage opened in the benchmark process as the floor: what
the same workload costs with no network and no server at all.

With ``--monitor``, a system of our server has a twin (``KEY+monitor``):
the same client against a second server of ours, whose ``monitor-address``
is set and scraped while it is measured, so the two measure the monitor's
cost and nothing else.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ZODB

from .clients import FILESTORAGE, OURS, ZEO, open_storage
from .processes import Scraper

#: Objects a connection keeps (ZODB's default, 400, would evict mid-read).
OBJECT_CACHE_SIZE = 50_000

#: (key, client kind, server kind or None, label); the first is the baseline.
MATRIX = (
    ("zeo-zeo", ZEO, "zeo", "ZEO client × ZEO server"),
    ("zeo-ours", ZEO, "ours", "ZEO client × our server"),
    ("ours-zeo", OURS, "zeo", "our client × ZEO server"),
    ("ours-ours", OURS, "ours", "our client × our server"),
    ("filestorage", FILESTORAGE, None, "FileStorage in-process (floor)"),
)
BASELINE = MATRIX[0][0]
#: The key of a system's twin whose server runs a monitor.
MONITORED = "{}+monitor"
MONITORED_LABEL = "{}, monitor on"


@dataclass
class System:
    key: str
    client: str
    server: str | None
    label: str
    #: A server address, or ``(path, blob_dir)`` for the FileStorage.
    target: Any
    #: The server process, whose memory ``server_rss`` reads.
    server_pid: int | None
    work_dir: str
    #: The twin's scraper, and the key of the same system without a monitor.
    scraper: Scraper | None = None
    monitor_of: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    _serial: Iterator[int] = field(default_factory=itertools.count)

    def open(self, **options: Any) -> Any:
        return open_storage(self.client, self.target, **options)

    @contextlib.contextmanager
    def database(self, pool_size: int = 7, **options: Any) -> Iterator[ZODB.DB]:
        storage = self.open(**options)
        db = ZODB.DB(storage, cache_size=OBJECT_CACHE_SIZE, pool_size=pool_size)
        try:
            yield db
        finally:
            db.close()

    def unique(self, label: str) -> str:
        """A name no other measurement of any system uses."""
        return f"{self.key}-{label}-{next(self._serial)}"

    def fresh_dir(self, label: str) -> str:
        path = os.path.join(self.work_dir, self.unique(label))
        os.makedirs(path)
        return path
