"""The benchmark suite runs end to end in its quick mode.

``python -m bench --quick`` starts ZEO's server and ours as child processes
and measures every quick workload on the whole matrix; this checks that the
result files exist and that every workload has a numeric ratio for every
system.  ``--monitor --quick`` adds our server with a monitor, scraped
while it is measured, against the same server without one.  No timing is
asserted: the figures depend on the machine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from support.commands import run_module

#: The quick mode's workloads: everything but 16 processes and 100 MB blobs.
QUICK_WORKLOADS = {
    "add",
    "update",
    "cold_read",
    "warm_read",
    "hot_read",
    "load_before",
    "txn_1",
    "txn_10",
    "txn_100",
    "commits_1",
    "commits_4",
    "blob_write_1mb",
    "blob_read_1mb",
    "restart_read",
    "server_rss",
}
RUN_TIMEOUT = 60
SYSTEMS = {"zeo-zeo", "zeo-ours", "ours-zeo", "ours-ours", "filestorage"}


@pytest.mark.timeout(120)
def test_quick_benchmark_writes_every_row(tmp_path: Path) -> None:
    output = tmp_path / "results"
    _run_bench(["--quick", "--output", str(output)], RUN_TIMEOUT)

    results = json.loads((output / "results.json").read_text())
    markdown = (output / "RESULTS.md").read_text()
    assert {system["key"] for system in results["systems"]} == SYSTEMS
    rows = {workload["name"]: workload for workload in results["workloads"]}
    assert set(rows) == QUICK_WORKLOADS
    for name, row in rows.items():
        assert set(row["results"]) == SYSTEMS, name
        for system, entry in row["results"].items():
            for ratio in (entry["ratio"], entry["paired_ratio"]):
                assert isinstance(ratio, float), (name, system, entry)
                assert math.isfinite(ratio), (name, system, entry)
                assert ratio > 0, (name, system, entry)
        assert row["results"]["zeo-zeo"]["ratio"] == 1.0
        assert row["results"]["zeo-zeo"]["paired_ratio"] == 1.0
        assert f"| {name} |" in markdown
    assert {"commits_16", "blob_write_100mb", "blob_read_100mb"} <= set(
        results["skipped"]
    )
    assert results["machine"]["packages"]["ZEO"]
    assert "failed" not in markdown
    assert "## Paired ratios" in markdown


def _run_bench(arguments: list[str], timeout: float) -> None:
    run_module("bench", arguments, timeout)


@pytest.mark.timeout(90)
def test_quick_monitor_comparison_scrapes_and_writes_on_off_rows(
    tmp_path: Path,
) -> None:
    """``--monitor``: commits_1 and load_before on our client × our server,
    with and without the monitor; the monitor is scraped and never fails."""
    output = tmp_path / "results"
    _run_bench(["--monitor", "--quick", "--output", str(output)], RUN_TIMEOUT)

    results = json.loads((output / "results.json").read_text())
    markdown = (output / "RESULTS.md").read_text()
    systems = {system["key"]: system for system in results["systems"]}
    assert set(systems) == {"ours-ours", "ours-ours+monitor"}
    assert systems["ours-ours+monitor"]["monitor_of"] == "ours-ours"
    assert results["baseline"] == "ours-ours"
    rows = {workload["name"]: workload for workload in results["workloads"]}
    assert set(rows) == {"commits_1", "load_before"}
    for name, row in rows.items():
        on = row["results"]["ours-ours+monitor"]
        for ratio in (on["on_off_ratio"], on["on_off_paired_ratio"]):
            assert isinstance(ratio, float), (name, on)
            assert math.isfinite(ratio), (name, on)
            assert ratio > 0, (name, on)
        assert on["monitor_off"] == "ours-ours"
        # The first scrape begins within each monitored measurement.
        (scrapes,) = on["scrapes"]
        assert scrapes >= 1, (name, on)
        assert "scrapes" not in row["results"]["ours-ours"], (name, row)
        assert f"| {name} | higher | our client × our server |" in markdown
    monitor = results["monitor"]
    assert monitor["scrapes"] >= 1, monitor
    assert monitor["failed"] == 0, monitor
    assert monitor["metrics_bytes"] > 0, monitor
    assert monitor["status_bytes"] > 0, monitor
    assert "## Monitor on / off" in markdown
    assert "none failed" in markdown
    assert "failed" not in markdown.replace("none failed", "")


@pytest.mark.timeout(420)
def test_zodbshootout_runs_through_both_stacks(tmp_path: Path) -> None:
    """zodbshootout's add, update, cold and hot workloads, two processes,
    through ZEO's stack and ours; a workload that raises (as the cold read
    did when clearing our cache reset its last tid) fails the run."""
    output = tmp_path / "results"
    # 60 s alone; pyperf's processes are slow on a busy machine.
    run_module(
        "bench.shootout",
        ["--quick", "--concurrency", "2", "--output", str(output)],
        timeout=360,
    )
    rows = json.loads((output / "shootout.json").read_text())
    seen = {(row["concurrency"], row["test"].split()[0]) for row in rows}
    for test in ("add", "update", "read"):
        assert (2, test) in seen, (test, rows)
    assert len(rows) == 4, rows  # cold and hot reads are both "read" rows
    for row in rows:
        for key in ("zeo_s", "ours_s", "ratio"):
            assert math.isfinite(row[key]), row
            assert row[key] > 0, row
    assert "| 2 | read 50 cold objects |" in (output / "SHOOTOUT.md").read_text()


#: The scaling workloads' quick mode: two fan-out points, one reader count,
#: and (``--big``) the big-database workloads on a few thousand objects.
SCALING_CURVES = {"fanout_0", "fanout_4", "ceiling_2"}
SCALING_WORKLOADS = {
    *SCALING_CURVES,
    "delay_idle",
    "delay_busy",
    "big_start_index",
    "big_start_noindex",
    "big_reconnect_short",
    "big_reconnect_long",
    "big_pack",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(120)
def test_quick_scaling_run_writes_tables_plots_and_ratios(tmp_path: Path) -> None:
    """``bench.scaling --quick --big``: ZEO 6 and ours measured in one run,
    the floor on the curves, every row with a ratio and the figures its
    workload reports, the plots drawn and embedded in the matrix's
    ``RESULTS.md`` when that is beside them."""
    output = tmp_path / "results"
    output.mkdir()
    matrix = {
        "command": "python -m bench",
        "baseline": "zeo-zeo",
        "systems": [{"key": "zeo-zeo", "label": "ZEO"}],
        "options": {"runs": 1},
        "encodings": {},
        "machine": {
            "cpu_model": "cpu",
            "cores": 2,
            "ram_gib": 1,
            "os": "os",
            "python": "python",
            "packages": {},
            "load_average_at_start": [0, 0, 0],
        },
        "workloads": [],
        "skipped": [],
        "elapsed_s": 1.0,
    }
    (output / "results.json").write_text(json.dumps(matrix))
    run_module(
        "bench.scaling", ["--quick", "--big", "--output", str(output)], timeout=100
    )

    results = json.loads((output / "scaling.json").read_text())
    assert [s["key"] for s in results["systems"]] == ["zeo-zeo", "ours-ours", "floor"]
    rows = {workload["name"]: workload for workload in results["workloads"]}
    assert set(rows) == SCALING_WORKLOADS
    for name, row in rows.items():
        floor = {"floor"} if name in SCALING_CURVES else set()
        systems = {"zeo-zeo", "ours-ours", *floor}
        assert set(row["results"]) == systems, name
        for system, entry in row["results"].items():
            assert entry["errors"] == [], (name, system)
            assert isinstance(entry["ratio"], float), (name, system, entry)
            assert math.isfinite(entry["ratio"]), (name, system, entry)
            if not name.startswith("big_"):
                assert entry["extras"]["operations"] > 0, (name, system)
    listeners = rows["fanout_4"]["results"]["ours-ours"]["extras"]
    assert listeners["listener_cpu_per_invalidation_us"] > 0
    assert listeners["server_cpu_per_commit_us"] > 0
    assert (
        "listener_cpu_per_invalidation_us"
        not in (rows["fanout_0"]["results"]["ours-ours"]["extras"])
    )
    reads = rows["ceiling_2"]["results"]["zeo-zeo"]["extras"]
    assert reads["operations"] == 200  # the pool, read once between the readers
    assert reads["ceiling_loads_per_s"] > 0
    assert rows["delay_busy"]["results"]["ours-ours"]["extras"]["operations"] == 20
    for system in ("zeo-zeo", "ours-ours"):
        big = {name: rows[name]["results"][system]["extras"] for name in rows}
        assert big["big_start_noindex"]["server_rss_MiB"] > 0
        # Inside the invalidation queue the cache is kept; past it, dropped.
        assert big["big_reconnect_short"]["cache_kept"] > 0.9, system
        assert big["big_reconnect_long"]["cache_kept"] < 0.1, system
        assert big["big_pack"]["commits_during_pack"] >= 1, system
    for plot in ("scaling_fanout.png", "scaling_ceiling.png"):
        assert (output / plot).read_bytes().startswith(PNG_SIGNATURE), plot
    scaling = (output / "SCALING.md").read_text()
    assert "![fanout](scaling_fanout.png)" in scaling
    assert "| delay_busy | lower |" in scaling
    page = (output / "RESULTS.md").read_text()
    assert "![ceiling](scaling_ceiling.png)" in page
    assert "[SCALING.md](SCALING.md)" in page
