"""``/metrics``: a server snapshot in the Prometheus text format.

The figures are counted by the server as it works (``status``,
``commit_times``, ``traffic``) and copied into a ``snapshot`` on the event
loop; this module only names them, with ``prometheus_client``'s metric
families and exposition, so a scrape costs the hot paths nothing.  Names
follow Prometheus's conventions: ``zodbserver_`` prefix, base units
(seconds, bytes), ``_total`` for counters, a ``storage`` label on what
belongs to one storage.  The process collector adds ``process_*`` (memory,
CPU, open file descriptors).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .snapshot import ServerSnapshot

#: ``counters`` key of a storage snapshot -> (metric name, help).
STORAGE_COUNTERS = {
    "loads": ("zodbserver_loads", "Objects loaded (loadBefore calls)."),
    "stores": ("zodbserver_stores", "Objects stored, deleted or restored."),
    "commits": ("zodbserver_commits", "Transactions committed."),
    "aborts": ("zodbserver_aborts", "Transactions aborted."),
    "conflicts": ("zodbserver_conflicts", "Write conflicts."),
    "conflicts_resolved": (
        "zodbserver_conflicts_resolved",
        "Write conflicts resolved on the server.",
    ),
}

#: ``histograms`` key -> (metric name, help).
STORAGE_HISTOGRAMS = {
    "wait": (
        "zodbserver_commit_lock_wait_seconds",
        "Time a committed transaction waited for the commit lock.",
    ),
    "hold": (
        "zodbserver_commit_lock_hold_seconds",
        "Time a committed transaction held the commit lock.",
    ),
    "vote": ("zodbserver_vote_seconds", "Time the storage took to vote."),
    "finish": ("zodbserver_finish_seconds", "Time the storage took to finish."),
}

#: ``traffic`` key -> (metric name, help).
TRAFFIC_COUNTERS = {
    "received_bytes": ("zodbserver_received_bytes", "Bytes received from clients."),
    "sent_bytes": ("zodbserver_sent_bytes", "Bytes sent to clients."),
    "blob_uploaded_bytes": (
        "zodbserver_blob_uploaded_bytes",
        "Blob bytes clients sent over the connection.",
    ),
    "blob_downloaded_bytes": (
        "zodbserver_blob_downloaded_bytes",
        "Blob bytes sent to clients over the connection.",
    ),
}


class SnapshotCollector(Collector):
    """The metric families of one snapshot (``None``: not serving yet)."""

    def __init__(
        self,
        snapshot: ServerSnapshot | None,
        blob_sizes: Mapping[str, int],
        *,
        ready: bool,
    ) -> None:
        self._snapshot = snapshot
        self._blob_sizes = blob_sizes
        self._ready = ready

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "zodbserver_ready",
            "1 while the server serves its storages, 0 while it starts or stops.",
            value=1 if self._ready else 0,
        )
        snapshot = self._snapshot
        if snapshot is None:
            return
        yield from self._storage_metrics(snapshot)
        yield from self._replication_metrics(snapshot)
        yield from self._traffic_metrics(snapshot)

    def _storage_metrics(self, snapshot: ServerSnapshot) -> Iterator[Metric]:
        storages = snapshot["storages"]
        for key, (name, doc) in STORAGE_COUNTERS.items():
            family = CounterMetricFamily(name, doc, labels=["storage"])
            for storage in storages:
                family.add_metric([storage["name"]], storage["counters"][key])
            yield family

        def gauge(name: str, doc: str, values: list[tuple[str, float]]) -> Metric:
            family = GaugeMetricFamily(name, doc, labels=["storage"])
            for storage_name, value in values:
                family.add_metric([storage_name], value)
            return family

        yield gauge(
            "zodbserver_connections",
            "Clients registered with the storage.",
            [(s["name"], s["connections"]) for s in storages],
        )
        yield gauge(
            "zodbserver_active_transactions",
            "Transactions begun and not yet finished or aborted.",
            [(s["name"], s["active_transactions"]) for s in storages],
        )
        yield gauge(
            "zodbserver_commit_lock_waiting",
            "Clients waiting for the commit lock.",
            [(s["name"], s["waiting"]) for s in storages],
        )
        yield gauge(
            "zodbserver_commit_lock_held_seconds",
            "How long the current holder has held the commit lock (0: free).",
            [(s["name"], s["lock"]["held_for"] or 0.0) for s in storages],
        )
        yield gauge(
            "zodbserver_invalidation_queue_length",
            "Transactions in the queue that reconnecting clients catch up from.",
            [(s["name"], s["invalidation_queue"]) for s in storages],
        )
        yield gauge(
            "zodbserver_last_transaction_timestamp_seconds",
            "When the storage's last transaction was committed.",
            [
                (s["name"], s["last_transaction_time"])
                for s in storages
                if s["last_transaction_time"] is not None
            ],
        )
        yield gauge(
            "zodbserver_storage_size_bytes",
            "Size of the storage (a FileStorage's Data.fs).",
            [(s["name"], s["size"]) for s in storages],
        )
        yield gauge(
            "zodbserver_objects",
            "Objects in the storage.",
            [(s["name"], s["objects"]) for s in storages],
        )
        yield gauge(
            "zodbserver_blob_directory_size_bytes",
            "Bytes of the files in the storage's blob directory.",
            [
                (s["name"], self._blob_sizes[directory])
                for s in storages
                if (directory := s["blob_directory"] or "") in self._blob_sizes
            ],
        )
        for key, (name, doc) in STORAGE_HISTOGRAMS.items():
            histogram = HistogramMetricFamily(name, doc, labels=["storage"])
            for storage in storages:
                observed = storage["histograms"][key]
                histogram.add_metric(
                    [storage["name"]],
                    [
                        (floatToGoString(bound), count)
                        for bound, count in observed["buckets"]
                    ],
                    observed["sum"],
                )
            yield histogram

    def _replication_metrics(self, snapshot: ServerSnapshot) -> Iterator[Metric]:
        replicas = GaugeMetricFamily(
            "zodbserver_replicas",
            "Replicas connected to the storage, by state (following, catching up).",
            labels=["storage", "state"],
        )
        lag = GaugeMetricFamily(
            "zodbserver_replica_lag_seconds",
            "How far a replica is behind the storage, in the time of the "
            "transactions it has not confirmed.",
            labels=["storage", "replica"],
        )
        lag_transactions = GaugeMetricFamily(
            "zodbserver_replica_lag_transactions",
            "Transactions a replica has not confirmed (of the last 100,000).",
            labels=["storage", "replica"],
        )
        unconfirmed = CounterMetricFamily(
            "zodbserver_commits_unconfirmed",
            "Commits acknowledged without the sync-replicas replicas "
            "(sync-replicas-missing async).",
            labels=["storage"],
        )
        following = GaugeMetricFamily(
            "zodbserver_replication_following",
            "On a replica: 1 while it streams from its primary, 0 while it "
            "reconnects or was refused.",
            labels=["storage", "primary"],
        )
        behind = GaugeMetricFamily(
            "zodbserver_replication_lag_seconds",
            "On a replica: how far behind its primary's last transaction "
            "it is, in the time of the transactions.",
            labels=["storage", "primary"],
        )
        for storage in snapshot["storages"]:
            name = storage["name"]
            replication = storage["replication"]
            states = {"following": 0, "catching up": 0}
            for replica in replication["replicas"]:
                states[replica["state"]] = states.get(replica["state"], 0) + 1
                who = replica["address"] or replica["label"]
                lag.add_metric([name, who], replica["lag_seconds"])
                lag_transactions.add_metric([name, who], replica["lag_transactions"])
            for state, count in sorted(states.items()):
                replicas.add_metric([name, state], count)
            unconfirmed.add_metric([name], replication["unconfirmed_commits"])
            primary = replication["primary"]
            if primary is not None:
                streaming = primary["state"] in ("following", "catching up")
                following.add_metric([name, primary["primary"]], int(streaming))
                behind.add_metric([name, primary["primary"]], primary["lag_seconds"])
        yield from (replicas, lag, lag_transactions, unconfirmed, following, behind)

    def _traffic_metrics(self, snapshot: ServerSnapshot) -> Iterator[Metric]:
        traffic = snapshot["traffic"]
        for key, (name, doc) in TRAFFIC_COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=traffic[key])  # type: ignore[literal-required]
        refused = CounterMetricFamily(
            "zodbserver_connections_refused",
            "Connections turned away, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(traffic["refused"].items()):
            refused.add_metric([reason], count)
        yield refused
        errors = CounterMetricFamily(
            "zodbserver_protocol_errors",
            "Protocol errors by clients, by kind.",
            labels=["kind"],
        )
        for kind, count in sorted(traffic["protocol_errors"].items()):
            errors.add_metric([kind], count)
        yield errors
        closed = CounterMetricFamily(
            "zodbserver_connections_closed",
            "Connections the server closed, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(traffic["closed"].items()):
            closed.add_metric([reason], count)
        yield closed


def exposition(
    snapshot: ServerSnapshot | None, blob_sizes: Mapping[str, int], *, ready: bool
) -> bytes:
    """The text a Prometheus scrape of ``/metrics`` gets."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    registry.register(SnapshotCollector(snapshot, blob_sizes, ready=ready))
    return generate_latest(registry)
