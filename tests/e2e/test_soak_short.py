"""The soak (``stress/soak.py``) in its short mode.

Twelve clients -- readers, writers (with the shared counter and the
conflicting shared mapping), blob users, churners that close and churners
that are SIGKILLed, half of each through ZEO 6's client and half through
ours -- run for 20 seconds against a real server process sampled every
second.  The run must end with no error, every kind of operation done,
everything acknowledged found in the file (values, the counter, the shared
mapping, every blob revision, no killed voter's transaction, the
transaction count the monitor reports) and a clean ``fstest``; the sampling
must have produced data from ``/proc`` and the monitor alike, the fds must
be back to their idle level and ``/status.json`` must show no client, no
transaction and the commit lock free once the clients have gone, and the
PNG must be drawn.  Memory is held to
a generous bound only (the 10-minute run judges flatness), and no timing is
asserted.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

from stress import soak

SEED = random.randrange(1 << 30)
#: RSS growth after warm-up allowed in so short a run, MiB.
RSS_BOUND = 64


def test_short_soak_has_no_errors_and_loses_nothing(tmp_path: Path) -> None:
    plot = tmp_path / "soak.png"
    outcome = soak.run(
        soak.Options(
            clients=12,
            seconds=20,
            seed=SEED,
            interval=1.0,
            items=1000,
            directory=tmp_path / "run",
            plot=plot,
            quiet=True,
            argv=["(test)"],
        )
    )
    text = soak.report(outcome)
    assert outcome.error_total == 0, (SEED, outcome.error_counts, outcome.errors[:3])
    judged = {check.name: check for check in outcome.checks}
    for name in (
        "errors",
        "machinery",
        "operations",
        "data",
        "server exit",
        "server log",
        "client logs",
        "worker stderr",
        "sampling",
        "fds flat",
        "fds idle",
        "server idle",
    ):
        assert judged[name].ok, (SEED, name, judged[name].detail)
    assert "plot" not in judged, judged.get("plot")

    # Every role ran, through both clients.
    assert outcome.counts == {
        "reader": 5,
        "writer": 3,
        "blob": 2,
        "churn-close": 1,
        "churn-drop": 1,
    }
    assert {state["kind"] for state in outcome.clients.values() if "kind" in state} == {
        "ours",
        "zeo",
    }
    assert set(outcome.drop_kinds) == {"ours", "zeo"}
    assert outcome.drops["idle"] > 0
    assert outcome.drops["voted"] > 0

    # All data verified.
    found = outcome.verification
    assert not found["problems"], (SEED, found["problems"])
    assert found["fstest"] == "clean"
    assert found["counter"] == found["increments"] > 0
    assert found["blobs_checked"] == found["blob_writes"] > 0
    assert found["shared_writes"] > 0
    assert found["doomed"] == outcome.drops["voted"]
    assert found["transactions"] == found["expected_transactions"]
    assert found["transactions"] == found["monitor_commits"]

    # The sampling produced data, from /proc and from the monitor.
    samples = outcome.samples
    assert len(samples) >= 15, len(samples)
    assert all(sample.metrics is not None for sample in samples)
    assert all(sample.rss > 0 and sample.fds > 0 for sample in samples)
    assert max(sample.connections or 0 for sample in samples) >= 10
    first, last = samples[0].metrics, samples[-1].metrics
    assert first is not None
    assert last is not None
    assert last["commits"] > first["commits"]
    assert outcome.idle_before is not None
    assert outcome.idle_after is not None
    memory = outcome.memory
    assert memory["samples"] >= 10
    assert memory["rss_growth"] <= RSS_BOUND, memory["rss_growth"]
    assert memory["rss_fitted_growth"] <= RSS_BOUND, memory["rss_fitted_growth"]

    # The plot is a PNG of the size drawn.
    assert outcome.plot == plot
    png = plot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == soak.PLOT_SIZE

    # The report shows it all.
    for heading in ("## Checks", "## Operations", "## Memory", "## Verification"):
        assert heading in text
    assert "| blob write |" in text
