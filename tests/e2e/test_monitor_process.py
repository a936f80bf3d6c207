"""The monitor of a server process, set up as operators do: ``zeoserver
--monitor-address`` or ``monitor-address`` in zeo.conf; ``zeoserver status
--verbose``; JSON log lines through zeo.conf's ``<logfile>``."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import transaction
import ZEO.ClientStorage
import ZODB

from support.monitoring import Scrape, get
from support.server_processes import free_port

CLI = [sys.executable, "-m", "zodbserver.cli"]
STARTED = re.compile(r"started \(pid (\d+)\), listening on 127\.0\.0\.1:(\d+)")


def zeoserver(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    zeoserver("stop", cwd=tmp_path)  # whatever a failed test left running


def start(*options: str, cwd: Path) -> int:
    """``zeoserver OPTIONS start``: the server's port."""
    result = zeoserver(*options, "start", cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    match = STARTED.search(result.stdout)
    assert match, result.stdout
    return int(match.group(2))


def commit(port: int) -> None:
    db = ZODB.DB(ZEO.ClientStorage.ClientStorage(("127.0.0.1", port), wait_timeout=30))
    try:
        with db.transaction() as connection:
            connection.root()["x"] = 1
    finally:
        db.close()
    transaction.abort()


def test_monitor_from_the_command_line_and_status_verbose(workdir: Path) -> None:
    monitor = ("127.0.0.1", free_port())
    options = ("-a", "127.0.0.1:0", "--monitor-address", f"{monitor[0]}:{monitor[1]}")
    port = start(*options, cwd=workdir)
    assert get(monitor, "/ready").status == 200
    assert get(monitor, "/live").status == 200
    commit(port)
    assert Scrape(monitor).storage("zodbserver_commits_total") >= 1

    result = zeoserver(*options, "status", "--verbose", cwd=workdir)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("zeoserver is running (pid ")
    assert "state: serving" in out
    assert re.search(r"storage '1': .*, 1 objects, last transaction 20", out)
    assert "commits 2" in out  # the root's creation, and ours
    assert "commit lock: free" in out
    assert "clients (0):" in out
    assert "slowest recent commits:" in out

    assert zeoserver(*options, "stop", cwd=workdir).returncode == 0
    with pytest.raises(ConnectionRefusedError):
        get(monitor, "/live")


def test_status_verbose_says_when_it_cannot_reach_the_server(workdir: Path) -> None:
    """Port 0 names no port to ask: the figures are missing, and why."""
    options = ("-a", "127.0.0.1:0")
    start(*options, cwd=workdir)
    result = zeoserver(*options, "status", "--verbose", cwd=workdir)
    assert result.returncode == 1
    assert "cannot ask the server at 127.0.0.1:0" in result.stderr


def test_status_verbose_reads_ruok_on_the_server_port(workdir: Path) -> None:
    port = free_port()
    options = ("-a", f"127.0.0.1:{port}")
    start(*options, cwd=workdir)
    commit(port)
    result = zeoserver(*options, "status", "--verbose", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "storage '1':\n" in result.stdout
    assert "  commits: 2\n" in result.stdout  # the root's creation, and ours
    assert "  timeout-thread-is-alive: stub\n" in result.stdout


def test_a_monitor_address_in_use_fails_the_start(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = zeoserver(
            "-a",
            "127.0.0.1:0",
            "--monitor-address",
            f"127.0.0.1:{busy}",
            "start",
            cwd=workdir,
        )
    assert result.returncode == 1
    assert f"cannot listen on monitor-address 127.0.0.1:{busy}" in result.stderr + (
        result.stdout
    )


def test_zeo_conf_monitor_address_and_json_log_lines(workdir: Path) -> None:
    monitor = ("127.0.0.1", free_port())
    log = workdir / "server.log"
    conf = workdir / "zeo.conf"
    conf.write_text(
        textwrap.dedent(
            f"""\
            <zeo>
              address 127.0.0.1:0
              monitor-address {monitor[0]}:{monitor[1]}
              slow-commit-threshold 0.5
            </zeo>
            <filestorage 1>
              path {workdir / "Data.fs"}
            </filestorage>
            <eventlog>
              <logfile>
                path {log}
                formatter zodbserver.logformat.JSONFormatter
              </logfile>
            </eventlog>
            """
        )
    )
    port = start("-C", str(conf), cwd=workdir)
    commit(port)
    assert get(monitor, "/ready").status == 200
    assert zeoserver("-C", str(conf), "stop", cwd=workdir).returncode == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    messages = [record["message"] for record in records]
    assert f"monitor listening on http://{monitor[0]}:{monitor[1]}/" in messages
    assert all(
        set(record) >= {"time", "level", "logger", "message", "pid"}
        for record in records
    )
