"""``python -m bench.database --quick`` runs end to end, so that the
RelStorage benchmark cannot rot: it starts PostgreSQL, both systems
measure every row, and the report has a number in every cell.  No timing
is asserted: the figures depend on the machine."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from support.commands import markdown_rows, run_module

WORKLOADS = [
    "cold_read",
    "cold_read_new_server",
    "commits_4",
    "commits_16",
    "delay",
    "idle_load",
]
SYSTEMS = {"relstorage", "ours"}
RUN_TIMEOUT = 150
NUMBER = re.compile(r"^-?[0-9][0-9,]*(\.[0-9]+)?$")


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_the_database_benchmark_writes_every_row(tmp_path: Path) -> None:
    run_module("bench.database", ["--quick", "--output", str(tmp_path)], RUN_TIMEOUT)

    results = json.loads((tmp_path / "results.json").read_text())
    assert [w["name"] for w in results["workloads"]] == WORKLOADS
    for workload in results["workloads"]:
        assert set(workload["results"]) == SYSTEMS, workload["name"]
        for system, entry in workload["results"].items():
            assert isinstance(entry["median"], float), (workload["name"], system)
            assert math.isfinite(entry["median"]), (workload["name"], system)
            assert isinstance(entry["paired_ratio"], float), (workload["name"], system)
    idle = next(w for w in results["workloads"] if w["name"] == "idle_load")
    for entry in idle["results"].values():
        assert entry["median"] > 0  # PostgreSQL counted the statements

    rows = markdown_rows((tmp_path / "RESULTS.md").read_text(), "workload")
    assert [row["workload"].strip("`") for row in rows] == WORKLOADS
    for row in rows:
        for column in ("A", "B", "B / A", "B / A paired"):
            cell = row[column]
            if cell == "n/a":  # a ratio to a delay not above 0
                assert (row["workload"], column[:3]) == ("`delay`", "B /"), row
                assert float(row["A"]) <= 0, row
                continue
            assert NUMBER.match(cell), (row["workload"], column, cell)
