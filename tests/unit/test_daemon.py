"""Starting a daemon, its start-up report, and stopping it: real processes.

The daemon is a few lines of Python that lock a pid file as ``fg`` does and
answer through ``--ready-fd``.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from zodbserver import daemon
from zodbserver.exit_codes import EXIT_OK, STATUS_NOT_RUNNING, STATUS_STALE
from zodbserver.pidfile import probe, read_pid

#: argv: PID_FILE MODE --ready-fd FD; MODE is ready, error, silent or exit.
DAEMON = textwrap.dedent(
    """
    import signal, sys, time
    from zodbserver.daemon import ReportPipe
    from zodbserver.pidfile import PidFile

    pid_file, mode, fd = sys.argv[1], sys.argv[2], int(sys.argv[4])
    lock = PidFile(pid_file)
    lock.acquire()
    report = ReportPipe(fd)
    print("daemon says hello", flush=True)
    if mode == "error":
        lock.release()
        report.failed("the disk is on fire", 75)
        sys.exit(75)
    if mode == "exit":
        sys.exit(1)
    # Before the report: a stop may follow it at once, and find the pid
    # file removed as the process exits.
    signal.signal(signal.SIGTERM, lambda *args: sys.exit(0))
    try:
        if mode == "ready":
            report.ready("somewhere:1")
        time.sleep(60)
    finally:
        lock.release()
    """
)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, str, str]:
    script = tmp_path / "daemon.py"
    script.write_text(DAEMON)
    return script, str(tmp_path / "d.pid"), str(tmp_path / "d.log")


def launch(files, mode: str, timeout: float = 30.0):
    script, pid_file, log_file = files
    argv = [sys.executable, str(script), pid_file, mode]
    return daemon.launch(argv, log_file=log_file, timeout=timeout)


def test_ready_then_stopped(files, capsys) -> None:
    _, pid_file, log_file = files
    report, offset = launch(files, "ready")
    assert (report.kind, report.detail) == ("ready", "somewhere:1")
    assert offset == 0
    assert probe(pid_file) == ("running", report.pid)
    assert daemon.status("d", pid_file) == EXIT_OK
    assert daemon.stop("d", pid_file, timeout=30) == EXIT_OK
    assert probe(pid_file)[0] == "stopped"
    assert daemon.status("d", pid_file) == STATUS_NOT_RUNNING
    out = capsys.readouterr().out
    assert f"d is running (pid {report.pid})" in out
    assert f"d stopped (pid {report.pid})" in out
    assert "daemon says hello" in Path(log_file).read_text()


def test_an_error_carries_its_status(files, capsys) -> None:
    _, _, log_file = files
    report, offset = launch(files, "error")
    assert (report.kind, report.status) == ("error", 75)
    assert report.detail == "the disk is on fire"
    daemon.print_log_since(log_file, offset)
    assert "daemon says hello" in capsys.readouterr().err


def test_exiting_without_a_word(files) -> None:
    _, pid_file, _ = files
    report, _ = launch(files, "exit")
    assert report.kind == "exited"
    pid = read_pid(pid_file)
    assert pid is not None
    assert daemon.wait_for_exit(pid, pid_file, timeout=30)
    assert probe(pid_file)[0] == "stale"  # it died holding the file


def test_still_starting(files) -> None:
    _, pid_file, _ = files
    report, _ = launch(files, "silent", timeout=0.5)
    assert report.kind == "timeout"
    state, _pid = probe(pid_file)
    assert state == "running"
    assert daemon.stop("d", pid_file, timeout=30) == EXIT_OK


def test_stop_and_status_without_a_daemon(files, capsys) -> None:
    _, pid_file, _ = files
    assert daemon.stop("d", pid_file, timeout=1) == 1
    assert "d is not running" in capsys.readouterr().err
    Path(pid_file).write_text("999999999\n")
    assert daemon.status("d", pid_file) == STATUS_STALE
