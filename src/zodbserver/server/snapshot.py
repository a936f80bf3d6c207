"""A server's state at one instant, as plain data: what the monitor shows.

``take`` runs on the event loop, which owns everything it reads (the
sessions, the commit locks, the counters), and returns dictionaries of
numbers and strings only -- the ``/status.json`` document -- which the
monitor's threads then render as metrics, a page or JSON without touching
the live objects.  Only what is cheap to read is read here: the size of a
blob directory is measured by the monitor, outside the loop.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, TypedDict

from ZODB.TimeStamp import TimeStamp
from ZODB.utils import z64

from .commit_times import CommitRecord, Histogram
from .status import ClientSnapshot
from .storage_server import HostedStorage, StorageServer
from .traffic import Traffic

#: Slowest recent commits listed per storage.
SLOWEST_COMMITS = 10


class HistogramSnapshot(TypedDict):
    #: ``[upper bound, cumulative count]``; the last bound is +Inf.
    buckets: list[tuple[float, int]]
    sum: float
    count: int


class LockSnapshot(TypedDict):
    holder: str | None
    held_for: float | None
    queue: list[str]


class StorageSnapshot(TypedDict):
    name: str
    size: int
    objects: int
    blob_directory: str | None
    last_transaction: str
    #: When the last transaction was committed (seconds since the epoch).
    last_transaction_time: float | None
    started: str
    counters: dict[str, int]
    connections: int
    active_transactions: int
    waiting: int
    invalidation_queue: int
    lock: LockSnapshot
    clients: list[ClientSnapshot]
    slowest_commits: list[dict[str, Any]]
    histograms: dict[str, HistogramSnapshot]
    #: Its primary (on a replica), its replicas and their lag, its history
    #: (``ReplicationControl.status``).
    replication: dict[str, Any]


class TrafficSnapshot(TypedDict):
    received_bytes: int
    sent_bytes: int
    blob_uploaded_bytes: int
    blob_downloaded_bytes: int
    refused: dict[str, int]
    protocol_errors: dict[str, int]
    closed: dict[str, int]


class ServerSnapshot(TypedDict):
    taken_at: float
    pid: int
    #: "primary" or "replica".
    role: str
    storages: list[StorageSnapshot]
    traffic: TrafficSnapshot


def take(server: StorageServer) -> ServerSnapshot:
    """The server's state now (on the event loop)."""
    replication = server.replication_status()
    return {
        "taken_at": time.time(),
        "pid": os.getpid(),
        "role": replication["role"],
        "storages": [
            _storage(hosted, replication["storages"][name])
            for name, hosted in server.hosted.items()
        ],
        "traffic": _traffic(server.traffic),
    }


def _storage(hosted: HostedStorage, replication: dict[str, Any]) -> StorageSnapshot:
    storage = hosted.storage
    stats = hosted.stats
    lock = hosted.commit_lock
    times = hosted.commit_times
    last = hosted.last_tid
    # A blob storage's helper knows its directory; a FileStorage without
    # blobs has a helper without one.
    blob_directory = getattr(getattr(storage, "fshelper", None), "base_dir", None)
    if blob_directory is not None:
        blob_directory = os.path.normpath(blob_directory)
    held_for = None if lock.locked_since is None else time.time() - lock.locked_since
    return {
        "name": hosted.name,
        "size": storage.getSize(),
        "objects": len(storage),
        "blob_directory": blob_directory,
        "last_transaction": last.hex(),
        "last_transaction_time": None if last == z64 else TimeStamp(last).timeTime(),
        "started": stats.start,
        "counters": {
            "loads": stats.loads,
            "stores": stats.stores,
            "commits": stats.commits,
            "aborts": stats.aborts,
            "conflicts": stats.conflicts,
            "conflicts_resolved": stats.conflicts_resolved,
        },
        "connections": len(hosted.sessions),
        "active_transactions": stats.active_txns,
        "waiting": lock.waiting,
        "invalidation_queue": len(hosted.invalidations),
        "lock": {
            "holder": None if lock.holder is None else lock.holder.label,
            "held_for": held_for,
            "queue": [holder.label for holder in lock.queue],
        },
        "clients": sorted(
            (session.snapshot() for session in hosted.sessions),
            key=lambda client: client["connected_at"],
        ),
        "slowest_commits": [_commit(entry) for entry in times.slowest(SLOWEST_COMMITS)],
        "histograms": {
            "wait": _histogram(times.wait),
            "hold": _histogram(times.hold),
            "vote": _histogram(times.vote),
            "finish": _histogram(times.finish),
        },
        "replication": replication,
    }


def _commit(entry: CommitRecord) -> dict[str, Any]:
    return dataclasses.asdict(entry)


def _histogram(histogram: Histogram) -> HistogramSnapshot:
    return {
        "buckets": histogram.cumulative(),
        "sum": histogram.sum,
        "count": histogram.count,
    }


def _traffic(traffic: Traffic) -> TrafficSnapshot:
    return {
        "received_bytes": traffic.received_bytes,
        "sent_bytes": traffic.sent_bytes,
        "blob_uploaded_bytes": traffic.blob_uploaded_bytes,
        "blob_downloaded_bytes": traffic.blob_downloaded_bytes,
        "refused": {str(reason): n for reason, n in traffic.refused.items()},
        "protocol_errors": {
            str(kind): n for kind, n in traffic.protocol_errors.items()
        },
        "closed": {str(reason): n for reason, n in traffic.closed.items()},
    }
