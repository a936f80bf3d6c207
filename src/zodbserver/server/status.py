"""Per-storage counters, reported by ``server_status()`` and ``ruok``.

The keys and their meaning are ZEO's, so monitoring that reads ZEO's
status (``zeo-nagios``, dashboards) reads ours unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StorageStats:
    loads: int = 0
    stores: int = 0
    commits: int = 0
    aborts: int = 0
    active_txns: int = 0
    conflicts: int = 0
    conflicts_resolved: int = 0
    start: str = field(default_factory=time.ctime)

    def report(
        self,
        *,
        connections: int,
        waiting: int,
        lock_time: float | None,
        timeout_active: bool,
        last_transaction: bytes,
    ) -> dict[str, Any]:
        return {
            "connections": connections,
            "loads": self.loads,
            "stores": self.stores,
            "commits": self.commits,
            "aborts": self.aborts,
            "active_txns": self.active_txns,
            "lock_time": lock_time,
            "conflicts": self.conflicts,
            "conflicts_resolved": self.conflicts_resolved,
            "start": self.start,
            "waiting": waiting,
            "timeout-thread-is-alive": timeout_active,
            "last-transaction": last_transaction.hex(),
        }
