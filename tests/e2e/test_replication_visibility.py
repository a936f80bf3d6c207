"""Replication shows: the primary's metrics count its replicas and their
lag, the replica's its primary and its own lag; ``server_status`` carries
the storage's replication; ``zeoserver status --verbose`` and the status
page print it."""

from __future__ import annotations

import json
from pathlib import Path

import ZODB

from support.monitoring import LOCAL, Scrape, get
from support.raw_client import RawClient
from support.replicas import file_storage, wait_caught_up
from support.waiting import wait_until
from zodbserver.client import ClientStorage
from zodbserver.server.thread import ServerThread
from zodbserver.status_report import format_status


def test_lag_and_roles_in_metrics_status_and_page(tmp_path: Path) -> None:
    primary = ServerThread(
        {"1": file_storage(tmp_path / "primary")}, monitor_address=LOCAL
    )
    address = primary.start()
    replica = ServerThread(
        {"1": file_storage(tmp_path / "replica")},
        replicate_from=address,
        monitor_address=LOCAL,
    )
    replica_address = replica.start()
    try:
        db = ZODB.DB(ClientStorage(address, wait_timeout=30))
        for number in range(5):
            with db.transaction() as conn:
                conn.root()[number] = number
        db.close()
        wait_caught_up(address, replica_address)
        assert primary.monitor is not None
        assert replica.monitor is not None
        primary_monitor = primary.monitor.address
        replica_monitor = replica.monitor.address

        def following() -> bool:
            scrape = Scrape(primary_monitor)
            return (
                scrape.value(
                    "zodbserver_replicas", storage="1", state="following", default=0
                )
                == 1
            )

        wait_until(following, "the primary's metrics to count a following replica")
        scrape = Scrape(primary_monitor)
        replica_label = f"127.0.0.1:{replica_address[1]}"
        assert (
            scrape.value(
                "zodbserver_replica_lag_transactions",
                storage="1",
                replica=replica_label,
            )
            == 0
        )
        theirs = Scrape(replica_monitor)
        primary_label = f"127.0.0.1:{address[1]}"
        assert (
            theirs.value(
                "zodbserver_replication_following", storage="1", primary=primary_label
            )
            == 1
        )
        assert (
            theirs.value(
                "zodbserver_replication_lag_seconds", storage="1", primary=primary_label
            )
            == 0
        )

        with RawClient(address) as raw:
            raw.result("register", "1", True)
            status = raw.result("server_status")
        assert [r["address"] for r in status["replication"]["replicas"]] == [
            replica_label
        ]

        document = get(replica_monitor, "/status.json")
        text = format_status(json.loads(document.text))
        assert f"replica of {primary_label}: following" in text
        page = get(primary_monitor, "/").text
        assert f"replica {replica_label}: following" in page
    finally:
        replica.stop()
        primary.stop()
