"""The stress commands of the README ("Stress tests") run end to end, in
their shortest modes, so that none of them can rot.

Each runs as ``python -m stress.NAME`` in a child process, as the README
shows it, with its data under the test's temporary directory, and must
exit 0 having written its report with the sections and rows it promises:
nothing lost, nothing leaked past a stated bound, only documented errors.
The machinery behind them is tested at more length elsewhere (the kill
storm, the vote kills, the soak, the live fuzz); here the commands
themselves -- their options, their reports, their exit status -- are.
No timing is asserted: the figures are the machine's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from support.commands import markdown_rows, run_module

#: Growth of our server's memory allowed while a client pipelines calls it
#: never reads (docs/operations.md: ``connection-buffer-limit`` 256KB of
#: unsent replies, and a close once 16MB more is sent after that).
PIPELINING_BOUND_MB = 32


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


def _figure(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    assert found, (pattern, text[:3000])
    return int(found.group(1).replace(",", ""))


@pytest.mark.timeout(120)
def test_torture_kills_and_loses_nothing(tmp_path: Path) -> None:
    output = tmp_path / "torture.md"
    data = tmp_path / "data"
    run_module(
        "stress.torture",
        [
            "--kills=3",
            "--vote-kills=1",
            "--vote-stops=1",
            "--transaction-timeout=1",
            f"--directory={data}",
            f"--output={output}",
        ],
        timeout=90,
    )
    text = output.read_text()
    assert "**Result: all checks passed.**" in text
    for heading in (
        "## Server SIGKILL storm",
        "## Clients killed mid-vote",
        "## Machine",
    ):
        assert heading in text
    assert "| kills done | 3 of 3 " in text
    acknowledged = _figure(r"\| commits acknowledged \| (\d+) ", text)
    assert acknowledged > 0
    assert _figure(r"\| commits verified \| (\d+) ", text) == acknowledged
    assert _figure(r"\| blobs verified \| (\d+) ", text) > 0
    assert "| fstest | clean: " in text
    series = markdown_rows(text, "series")
    assert [row["trials"] for row in series] == ["1", "1", "1"]
    assert all("the voted transaction absent" in row["checks"] for row in series)
    assert list(data.iterdir()) == []  # a run that passed removes its data


@pytest.mark.timeout(60)
def test_big_transaction_is_spooled_not_held(tmp_path: Path) -> None:
    output = tmp_path / "big.md"
    run_module(
        "stress.big_transaction",
        [
            "--size=16MB",
            "--object-size=1MB",
            "--threshold=1MB",
            f"--directory={tmp_path}",
            f"--output={output}",
        ],
        timeout=50,
    )
    text = output.read_text()
    assert "One transaction of 16 objects of 1 MB (our spool threshold: 1MB)" in text
    rows = {row["server"]: row for row in markdown_rows(text, "server")}
    assert set(rows) == {"ours", "zeo"}
    for row in rows.values():
        assert _number(row["VmHWM after MB"]) > 0, row
    # Spooled past 1MB: the server never held the 16 MB transaction.
    assert _number(rows["ours"]["VmHWM growth MB"]) < 8, rows["ours"]
    assert [path.name for path in tmp_path.iterdir()] == ["big.md"]


@pytest.mark.timeout(90)
def test_read_latency_measures_both_servers_with_and_without_writers(
    tmp_path: Path,
) -> None:
    output = tmp_path / "read_latency.md"
    run_module(
        "stress.read_latency",
        [
            "--writers=1",
            "--seconds=1",
            "--objects=50",
            "--runs=1",
            f"--directory={tmp_path}",
            f"--output={output}",
        ],
        timeout=80,
    )
    text = output.read_text()
    rows = {
        (row["server"], row["condition"]): row for row in markdown_rows(text, "server")
    }
    assert set(rows) == {
        (kind, condition)
        for kind in ("ours", "zeo")
        for condition in ("baseline", "writers")
    }
    for (_, condition), row in rows.items():
        assert _number(row["reads"]) > 0, row
        if condition == "writers":
            assert _number(row["commits/s"]) > 0, row
    ratios = markdown_rows(text, "ratio")
    assert [(row["ratio"], row["condition"]) for row in ratios] == [
        ("ours / zeo", "baseline"),
        ("ours / zeo", "writers"),
    ]
    assert "ours imports `" in text
    assert [path.name for path in tmp_path.iterdir()] == ["read_latency.md"]


@pytest.mark.timeout(90)
def test_soak_passes_every_check(tmp_path: Path) -> None:
    """The plot is left out (``--no-plot``): drawing it needs Chromium,
    and ``test_soak_short.py`` checks it."""
    output = tmp_path / "soak.md"
    data = tmp_path / "data"
    run_module(
        "stress.soak",
        [
            "--clients=5",
            "--clients-per-process=5",
            "--minutes=0.05",
            "--interval=0.5",
            "--items=100",
            "--no-plot",
            f"--directory={data}",
            f"--output={output}",
        ],
        timeout=80,
    )
    text = output.read_text()
    checks = {row["check"]: row for row in markdown_rows(text, "check")}
    failed = {name: row["detail"] for name, row in checks.items() if row[""] != "ok"}
    assert not failed, failed
    for name in ("errors", "operations", "data", "server exit", "fds idle"):
        assert name in checks, name
    assert "plot" not in checks
    for heading in ("## Operations", "## Errors", "## Verification", "## Machine"):
        assert heading in text
    assert not output.with_suffix(".png").exists()
    assert list(data.iterdir()) == []


@pytest.mark.timeout(60)
def test_live_fuzz_finds_nothing(tmp_path: Path) -> None:
    output, findings = tmp_path / "fuzz.md", tmp_path / "findings.json"
    run_module(
        "stress.fuzz",
        [
            "--frames=2000",
            "--connections=2",
            "--processes=0",
            f"--directory={tmp_path / 'data'}",
            f"--output={output}",
            f"--json={findings}",
        ],
        timeout=50,
    )
    assert json.loads(findings.read_text()) == []
    text = output.read_text()
    assert "- findings: **0** distinct" in text
    assert "- other problems: **0**" in text
    assert "fstest: exit 0, clean" in text
    assert "Failures: 0" in text
    for heading in ("## Findings", "## The well-behaved client", "## The data"):
        assert heading in text


@pytest.mark.timeout(60)
def test_atheris_fuzzes_the_decoder_and_the_argument_checks(tmp_path: Path) -> None:
    from stress import fuzz_targets

    corpus, artifacts = tmp_path / "corpus", tmp_path / "artifacts"
    corpus.mkdir()
    artifacts.mkdir()
    runs = 2000
    done = run_module(
        "stress.fuzz_atheris",
        [f"-runs={runs}", "-seed=1", f"-artifact_prefix={artifacts}/", str(corpus)],
        timeout=50,
    )
    assert f"Done {runs} runs" in done.stderr, done.stderr[-3000:]
    assert "Instrumenting zodbserver.server.methods" in done.stderr
    assert len(list(corpus.iterdir())) >= len(fuzz_targets.seed_inputs())
    assert list(artifacts.iterdir()) == []  # no crash kept


@pytest.mark.timeout(90)
def test_a_pipelining_client_that_never_reads_cannot_grow_our_server(
    tmp_path: Path,
) -> None:
    output = tmp_path / "pipelining.md"
    run_module(
        "stress.pipelining_client",
        ["--quick", f"--directory={tmp_path}", f"--output={output}"],
        timeout=80,
    )
    text = output.read_text()
    assert "2000 calls per send" in text
    rows = {row["server"]: row for row in markdown_rows(text, "server")}
    assert set(rows) == {"ours", "zeo"}
    ours = rows["ours"]
    assert ours["ended"] in ("settled", "seconds"), ours
    assert _number(ours["calls sent"]) >= 2000, ours
    assert _number(ours["VmRSS growth MB"]) < PIPELINING_BOUND_MB, ours
    assert _number(ours["VmHWM growth MB"]) < PIPELINING_BOUND_MB, ours
    assert ours["other client served"] == "yes", ours
    assert ours["replies read back"] == "4000, in order", ours
    assert _number(rows["zeo"]["calls sent"]) >= 2000, rows["zeo"]
    assert [path.name for path in tmp_path.iterdir()] == ["pipelining.md"]
