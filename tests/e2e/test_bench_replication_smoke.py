"""``python -m bench.replication --quick`` runs end to end, so that the
replication benchmark cannot rot: every system measured, lag sampled, the
catch-up timed, and the report written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_replication_benchmark_runs(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.replication",
            "--quick",
            "--output",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    for system in ("zeo", "none", "async", "sync"):
        for workload in ("commits_1", "commits_4"):
            assert data["results"][system][workload][0]["per_second"] > 0
    assert data["lags"]["async"]
    assert data["lags"]["sync"]
    assert data["catchup_seconds"][0] > 0
    assert "| commits_4 | sync |" in (tmp_path / "RESULTS.md").read_text()
