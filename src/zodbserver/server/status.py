"""Per-storage counters, reported by ``server_status()`` and ``ruok``.

The keys and their meaning are ZEO's, so monitoring that reads ZEO's
status (``zeo-nagios``, dashboards) reads ours unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

#: One storage's status, in ZEO's keys (``server_status()``, ``ruok``).
StorageStatus = TypedDict(
    "StorageStatus",
    {
        "connections": int,
        "loads": int,
        "stores": int,
        "commits": int,
        "aborts": int,
        "active_txns": int,
        "lock_time": float | None,
        "conflicts": int,
        "conflicts_resolved": int,
        "start": str,
        "waiting": int,
        #: ZEO's answer: True with a transaction timeout, "stub" without.
        "timeout-thread-is-alive": bool | str,
        "last-transaction": str,
    },
)


class ClientSnapshot(TypedDict):
    """One connected client, as the monitor shows it."""

    label: str
    identity: str | None
    address: str | None
    access: str
    read_only: bool
    connected_at: float
    loads: int
    commits: int
    #: The state of its transaction ("buffering", "voting", ...), or None.
    transaction: str | None
    waiting_for_lock: bool
    holds_lock: bool


class SessionStatus(StorageStatus):
    """``server_status()`` as one client sees it: its storage's status, who
    the server takes the client to be, and -- for an ``admin`` client --
    every client connected to the storage."""

    identity: str | None
    access: str
    clients: NotRequired[list[str]]
    #: Its primary or its replicas, its history (not in ZEO's status).
    replication: NotRequired[dict[str, Any]]


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
    ) -> StorageStatus:
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
            "timeout-thread-is-alive": True if timeout_active else "stub",
            "last-transaction": last_transaction.hex(),
        }
