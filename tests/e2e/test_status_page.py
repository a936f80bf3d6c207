"""The monitor's status page, read in a real browser (headless Chromium).

Two clients are connected and one holds the commit lock (it has voted and
not finished): the page, as the browser renders it, names both clients,
the holder of the lock, and the storage's figures; with a second
transaction voting behind the holder, the page shows the waiting client
and the queue.  A screenshot of each page is saved beside the test's
other files.
"""

from __future__ import annotations

import json
from pathlib import Path

from ZODB.Connection import TransactionMetaData
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle
from ZODB.utils import z64

from support.browser import Browser
from support.monitoring import MonitoredServer, get, holder_and_waiter


def test_the_page_shows_clients_and_the_lock_holder(tmp_path: Path) -> None:
    served = MonitoredServer(tmp_path)
    try:
        holder = served.client(tmp_path / "holder-blobs")
        served.client(tmp_path / "other-blobs")
        metadata = TransactionMetaData()
        holder.tpc_begin(metadata)
        holder.store(holder.new_oid(), z64, zodb_pickle(MinPO(1)), "", metadata)
        holder.tpc_vote(metadata)
        try:
            status = json.loads(get(served.monitor, "/status.json").body)
            (storage,) = status["storages"]
            labels = {client["label"]: client for client in storage["clients"]}
            assert len(labels) == 2
            (holding,) = [label for label, c in labels.items() if c["holds_lock"]]
            (other,) = [label for label in labels if label != holding]

            host, port = served.monitor
            with Browser(tmp_path) as browser:
                page = browser.open(f"http://{host}:{port}/")
                text = page.text()
                screenshot = page.screenshot(tmp_path / "status-page.png")
                title = page.title()
        finally:
            holder.tpc_abort(metadata)
    finally:
        served.close()

    assert title == "zodbserver status"
    assert "Storage 1" in text
    assert f"The commit lock is held by {holding} for" in text
    assert "Clients (2)" in text
    lines = text.splitlines()
    holder_row = next(line for line in lines if line.startswith(holding))
    assert "voted, holds the commit lock" in holder_row
    other_row = next(line for line in lines if line.startswith(other))
    assert "holds the commit lock" not in other_row
    assert "Open transactions\t1" in text
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_the_page_shows_a_client_waiting_behind_the_holder(tmp_path: Path) -> None:
    served = MonitoredServer(tmp_path)
    try:
        with holder_and_waiter(served, tmp_path) as lock:
            host, port = served.monitor
            with Browser(tmp_path) as browser:
                page = browser.open(f"http://{host}:{port}/")
                text = page.text()
                screenshot = page.screenshot(tmp_path / "status-page-queue.png")
    finally:
        served.close()

    assert f"The commit lock is held by {lock.holder} for" in text
    assert f"Waiting for the lock, in order: {lock.waiter}" in text
    assert "Clients (2)" in text
    lines = text.splitlines()
    holder_row = next(line for line in lines if line.startswith(lock.holder))
    assert "voted, holds the commit lock" in holder_row
    waiter_row = next(line for line in lines if line.startswith(lock.waiter))
    assert "waiting for the commit lock" in waiter_row
    assert "Open transactions\t2" in text
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
