"""The ``zeoserver`` command, run as operators run it: real processes.

Every server listens on 127.0.0.1 port 0 and the test reads the bound port
from the command's output; every test has its own var directory.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import transaction
import ZEO.ClientStorage
import ZODB

import zodbserver
from support.waiting import wait_until

CLI = [sys.executable, "-m", "zodbserver.cli"]
ANY_PORT = ["-a", "127.0.0.1:0"]
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
STARTED = re.compile(r"started \(pid (\d+)\), listening on 127\.0\.0\.1:(\d+)")
COMMAND_TIMEOUT = 120


def zeoserver(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


def start(*args: str | Path, cwd: Path) -> tuple[int, int]:
    """``zeoserver start``; the server's pid and port."""
    result = zeoserver(*args, "start", cwd=cwd)
    assert result.returncode == 0, result.stderr
    match = STARTED.search(result.stdout)
    assert match, result.stdout
    return int(match.group(1)), int(match.group(2))


def alive(pid: int) -> bool:
    """Whether ``pid`` runs: exists and is no zombie waiting for init."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def running_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process still runs."""
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A directory to run zeoserver in; no server outlives the test."""
    yield tmp_path
    for pid_file in tmp_path.glob("**/*.pid"):
        pid = running_pid(pid_file)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda pid=pid: not alive(pid), f"pid {pid} to die", timeout=60)


def commit_and_read(port: int, key: str) -> dict[str, int]:
    """Through a stock ZEO 6 client: add ``key`` and return the root's items."""
    client = ZEO.ClientStorage.ClientStorage(("127.0.0.1", port), wait_timeout=30)
    db = ZODB.DB(client)
    try:
        with db.transaction() as connection:
            connection.root()[key] = len(connection.root()) + 1
        connection = db.open(transaction.TransactionManager())
        try:
            return dict(connection.root().items())
        finally:
            connection.close()
    finally:
        db.close()


# -- start, status, stop -------------------------------------------------------


def test_start_serve_stop_with_the_defaults(workdir):
    status = zeoserver("status", cwd=workdir)
    assert (status.returncode, status.stdout) == (3, "zeoserver is not running\n")

    pid, port = start(*ANY_PORT, cwd=workdir)
    var = workdir / "var"
    assert (var / "filestorage" / "Data.fs").is_file()
    assert (var / "blobstorage").is_dir()
    assert (var / "zeoserver.pid").read_text() == f"{pid}\n"
    assert alive(pid)

    status = zeoserver("status", cwd=workdir)
    assert status.returncode == 0
    assert f"running (pid {pid})" in status.stdout

    assert commit_and_read(port, "first") == {"first": 1}

    stop = zeoserver("stop", cwd=workdir)
    assert stop.returncode == 0, stop.stderr
    assert f"stopped (pid {pid})" in stop.stdout
    assert not alive(pid)  # stop returned only after the process exited
    assert not (var / "zeoserver.pid").exists()
    assert zeoserver("status", cwd=workdir).returncode == 3

    # The data survived: a new server on the same Data.fs has it.
    _, port = start(*ANY_PORT, cwd=workdir)
    assert commit_and_read(port, "second") == {"first": 1, "second": 2}
    assert zeoserver("stop", cwd=workdir).returncode == 0


def test_start_when_running_fails_and_names_the_pid(workdir):
    pid, _ = start(*ANY_PORT, cwd=workdir)
    again = zeoserver(*ANY_PORT, "start", cwd=workdir)
    assert again.returncode == 1
    assert f"already running (pid {pid}" in again.stderr
    assert alive(pid)
    assert zeoserver("stop", cwd=workdir).returncode == 0


def test_stop_when_stopped_fails(workdir):
    result = zeoserver("stop", cwd=workdir)
    assert result.returncode == 1
    assert "not running" in result.stderr


def test_options_may_follow_the_command(workdir):
    pid, _ = start("--var", "elsewhere", "-a", "127.0.0.1:0", cwd=workdir)
    assert (workdir / "elsewhere" / "zeoserver.pid").read_text() == f"{pid}\n"
    assert zeoserver("status", "--var", "elsewhere", cwd=workdir).returncode == 0
    assert zeoserver("--var", "elsewhere", "status", cwd=workdir).returncode == 0
    assert zeoserver("status", cwd=workdir).returncode == 3
    assert zeoserver("stop", "--var", "elsewhere", cwd=workdir).returncode == 0


def test_restart_replaces_the_process(workdir):
    pid, _ = start(*ANY_PORT, cwd=workdir)
    result = zeoserver(*ANY_PORT, "restart", cwd=workdir)
    assert result.returncode == 0, result.stderr
    match = STARTED.search(result.stdout)
    assert match, result.stdout
    new_pid = int(match.group(1))
    assert new_pid != pid
    assert not alive(pid)
    assert commit_and_read(int(match.group(2)), "after-restart") == {"after-restart": 1}
    assert zeoserver("stop", cwd=workdir).returncode == 0


def test_restart_starts_a_stopped_server(workdir):
    result = zeoserver(*ANY_PORT, "restart", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert STARTED.search(result.stdout)
    assert zeoserver("stop", cwd=workdir).returncode == 0


def test_stale_pid_file(workdir):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid_file = workdir / "var" / "zeoserver.pid"
    pid_file.parent.mkdir()
    pid_file.write_text(dead.stdout)
    status = zeoserver("status", cwd=workdir)
    assert status.returncode == 1
    assert "pid file" in status.stdout
    assert zeoserver("stop", cwd=workdir).returncode == 1
    pid, _ = start(*ANY_PORT, cwd=workdir)  # takes the stale file over
    assert pid_file.read_text() == f"{pid}\n"
    assert zeoserver("stop", cwd=workdir).returncode == 0


def test_read_only_server_is_still_controllable(workdir):
    start(*ANY_PORT, cwd=workdir)  # creates the Data.fs
    assert zeoserver("stop", cwd=workdir).returncode == 0
    pid, _ = start(*ANY_PORT, "--read-only", cwd=workdir)
    assert zeoserver("status", cwd=workdir).returncode == 0
    assert zeoserver("stop", cwd=workdir).returncode == 0
    assert not alive(pid)


def test_daemon_restarts_itself_in_place_on_sighup(workdir):
    pid, _ = start(*ANY_PORT, cwd=workdir)
    log = workdir / "var" / "log" / "zeoserver.log"
    os.kill(pid, signal.SIGHUP)

    def listened_twice() -> bool:
        return log.read_text().count("zodbserver.cli listening on") == 2

    wait_until(listened_twice, "the restarted server to listen", timeout=60)
    port = int(LISTENING.findall(log.read_text())[-1])
    assert commit_and_read(port, "after-hup") == {"after-hup": 1}
    status = zeoserver("status", cwd=workdir)
    assert (status.returncode, f"(pid {pid})" in status.stdout) == (0, True)
    assert zeoserver("stop", cwd=workdir).returncode == 0


def test_sigusr2_reopens_the_log_for_logrotate(workdir):
    pid, _ = start(*ANY_PORT, cwd=workdir)
    log = workdir / "var" / "log" / "zeoserver.log"
    rotated = log.with_name("zeoserver.log.1")
    log.rename(rotated)
    os.kill(pid, signal.SIGUSR2)
    wait_until(log.exists, "a new log file", timeout=60)
    wait_until(lambda: "log files reopened" in log.read_text(), "log line", timeout=60)
    assert "listening on" in rotated.read_text()
    assert zeoserver("stop", cwd=workdir).returncode == 0
    assert "server stopped" in log.read_text()


# -- failing to start ----------------------------------------------------------


def test_second_server_on_the_same_data_fs_reports_the_lock(workdir):
    start(*ANY_PORT, cwd=workdir)
    data_fs = workdir / "var" / "filestorage" / "Data.fs"
    other = ["--var", "other", "-f", str(data_fs), *ANY_PORT]

    fg = zeoserver(*other, "fg", cwd=workdir)
    assert fg.returncode == 1
    assert str(data_fs) in fg.stderr
    assert "locked by another process" in fg.stderr
    assert "running zeoserver" in fg.stderr

    daemon = zeoserver(*other, "start", cwd=workdir)
    assert daemon.returncode == 1
    assert "failed to start" in daemon.stderr
    assert str(data_fs) in daemon.stderr
    assert "the last lines of" in daemon.stderr
    assert zeoserver("--var", "other", "status", cwd=workdir).returncode == 3

    assert zeoserver("status", cwd=workdir).returncode == 0
    assert zeoserver("stop", cwd=workdir).returncode == 0


def test_start_reports_an_address_in_use(workdir):
    _, port = start(*ANY_PORT, cwd=workdir)
    result = zeoserver(
        "--var", "other", "-a", f"127.0.0.1:{port}", "start", cwd=workdir
    )
    assert result.returncode == 1
    assert "failed to start" in result.stderr
    assert "address already in use" in result.stderr.lower()
    assert zeoserver("--var", "other", "status", cwd=workdir).returncode == 3
    assert zeoserver("stop", cwd=workdir).returncode == 0


# -- fg ------------------------------------------------------------------------


@contextlib.contextmanager
def foreground(*args: str, cwd: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``zeoserver fg``, once it listens: the process and its port."""
    with subprocess.Popen(
        [*CLI, *args, "fg"], cwd=cwd, stderr=subprocess.PIPE
    ) as process:
        try:
            yield process, _port_from(process, timeout=COMMAND_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()


def _port_from(process: subprocess.Popen[bytes], timeout: float) -> int:
    assert process.stderr is not None
    fd = process.stderr.fileno()
    output = b""
    deadline = time.monotonic() + timeout
    while (match := LISTENING.search(output.decode())) is None:
        remaining = deadline - time.monotonic()
        readable, _, _ = select.select([fd], [], [], max(remaining, 0))
        chunk = os.read(fd, 65536) if readable else b""
        if not chunk:
            raise AssertionError(f"fg did not listen: {output.decode()}")
        output += chunk
    return int(match.group(1))


def test_fg_logs_to_stderr_and_exits_0_on_sigterm(workdir):
    with foreground(*ANY_PORT, cwd=workdir) as (process, port):
        assert commit_and_read(port, "fg") == {"fg": 1}
        status = zeoserver("status", cwd=workdir)
        assert f"running (pid {process.pid})" in status.stdout
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=COMMAND_TIMEOUT) == 0
    assert not (workdir / "var" / "zeoserver.pid").exists()
    assert not (workdir / "var" / "log" / "zeoserver.log").exists()
    assert zeoserver("status", cwd=workdir).returncode == 3


def test_fg_exits_1_on_sighup(workdir):
    with foreground(*ANY_PORT, cwd=workdir) as (process, _):
        process.send_signal(signal.SIGHUP)
        assert process.wait(timeout=COMMAND_TIMEOUT) == 1


def test_stop_stops_a_foreground_server(workdir):
    with foreground(*ANY_PORT, cwd=workdir) as (process, _):
        result = zeoserver("stop", cwd=workdir)
        assert result.returncode == 0, result.stderr
        assert process.poll() == 0


# -- zeo.conf ------------------------------------------------------------------


def test_configuration_file(workdir):
    (workdir / "run").mkdir()
    (workdir / "logs").mkdir()
    config = workdir / "zeo.conf"
    config.write_text(
        textwrap.dedent(
            f"""
            <zeo>
              address 127.0.0.1:0
              pid-filename {workdir}/run/zeo.pid
            </zeo>
            <filestorage main>
              path {workdir}/Main.fs
            </filestorage>
            <mappingstorage scratch/>
            <eventlog>
              <logfile>
                path {workdir}/logs/zeo.log
              </logfile>
            </eventlog>
            """
        )
    )
    pid, port = start("-C", config, cwd=workdir)
    assert (workdir / "run" / "zeo.pid").read_text() == f"{pid}\n"
    assert (workdir / "Main.fs").is_file()
    assert not (workdir / "var" / "filestorage").exists()

    client = ZEO.ClientStorage.ClientStorage(
        ("127.0.0.1", port), storage="scratch", wait_timeout=30
    )
    client.close()

    tail = zeoserver("-C", config, "logtail", "--no-follow", "-n", "3", cwd=workdir)
    assert tail.returncode == 0
    log = (workdir / "logs" / "zeo.log").read_text()
    assert tail.stdout.splitlines() == log.splitlines()[-3:]
    assert "'main', 'scratch'" in log
    assert "zodbserver.cli listening on" in log

    assert zeoserver("-C", config, "status", cwd=workdir).returncode == 0
    assert zeoserver("-C", config, "stop", cwd=workdir).returncode == 0
    assert not (workdir / "run" / "zeo.pid").exists()


def test_wrong_configuration_file_exits_2_naming_file_and_line(workdir):
    config = workdir / "zeo.conf"
    config.write_text("<zeo>\n  transaction-timeout soon\n</zeo>\n<mappingstorage/>\n")
    for command in ("fg", "start", "status"):
        result = zeoserver("-C", config, command, cwd=workdir)
        assert result.returncode == 2
        assert f"{config}, line 2: " in result.stderr
        assert "'transaction-timeout'" in result.stderr


# -- the command line ----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["bogus"],
        ["-a", "host:port", "status"],
        ["status", "-a", "99999"],
        ["start", "-t", "soon"],
        ["start", "--no-such-option"],
        ["logtail", "-n", "many"],
    ],
)
def test_bad_command_line_exits_2(workdir, args):
    result = zeoserver(*args, cwd=workdir)
    assert result.returncode == 2
    assert "usage: zeoserver" in result.stderr
    assert "error:" in result.stderr
    assert not (workdir / "var").exists()


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("fg", "in this process"),
        ("start", "listens"),
        ("stop", "SIGTERM"),
        ("restart", "Stop the server"),
        ("status", "3 not running"),
        ("reload", "SIGUSR1"),
        ("logtail", "tail -f"),
    ],
)
def test_every_command_has_help(workdir, command, words):
    result = zeoserver(command, "--help", cwd=workdir)
    assert result.returncode == 0
    assert words in " ".join(result.stdout.split())
    assert "--configure" in result.stdout


def test_tls_from_the_command_line_and_reload(workdir):
    """--ssl-* make a TLS server; ``reload`` rereads the certificates."""
    from support.certificates import Certificates

    certificates = Certificates(workdir / "certificates")
    pem = certificates.server
    tls = ["--ssl-certificate", pem.certificate, "--ssl-key", pem.key]
    tls += ["--ssl-authenticate", certificates.ca_file]
    _, port = start(*ANY_PORT, *tls, cwd=workdir)
    web1 = certificates.client("web1")
    context = certificates.client_context(web1)
    db = zodbserver.DB(
        ("127.0.0.1", port), ssl=context, ssl_server_hostname="127.0.0.1"
    )
    try:
        with db.transaction() as connection:
            connection.root()["tls"] = "from the command line"
    finally:
        db.close()
    reloaded = zeoserver(*ANY_PORT, *tls, "reload", cwd=workdir)
    assert reloaded.returncode == 0, reloaded.stderr
    log = workdir / "var" / "log" / "zeoserver.log"
    wait_until(lambda: "TLS certificates reloaded" in log.read_text(), "the reload")
    assert "web1 at 127.0.0.1:" in log.read_text()
    assert zeoserver(*ANY_PORT, *tls, "stop", cwd=workdir).returncode == 0
    assert zeoserver(*ANY_PORT, *tls, "reload", cwd=workdir).returncode == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ssl-certificate", "server.pem"], "needs --ssl-authenticate too"),
        (["--ssl-authenticate", "SERVER-ONLY"], "needs --ssl-certificate too"),
        (
            ["--ssl-certificate", "missing.pem", "--ssl-authenticate", "SERVER-ONLY"],
            "certificate: cannot load",
        ),
    ],
)
def test_incomplete_tls_options_exit_2(workdir, args, message):
    result = zeoserver(*args, "start", cwd=workdir)
    assert result.returncode == 2
    assert message in result.stderr


def test_version(workdir):
    result = zeoserver("--version", cwd=workdir)
    assert result.returncode == 0, result.stderr
    version = importlib.metadata.version("zodbserver")
    assert version == zodbserver.__version__
    assert result.stdout == f"zeoserver {version}\n"
    assert not (workdir / "var").exists()


def test_logtail_without_a_log(workdir):
    result = zeoserver("logtail", "--no-follow", cwd=workdir)
    assert result.returncode == 1
    assert "no log file" in result.stderr


# -- --user (the buildout recipe's effective-user) ----------------------------

#: ``zeoserver fg`` with the modules it needs imported before ``--user``
#: takes effect: the interpreter may live where the other user cannot read
#: (here under a 0700 home directory), and a server switching users only
#: needs the files it serves to be that user's.
PREIMPORTED_CLI = [
    sys.executable,
    "-c",
    "import sys, encodings.idna, zodbserver.cli, zodbserver.server.main, "
    "zodbserver.config, ZODB.FileStorage, ZConfig.components.logger.loghandler, "
    "concurrent.futures.thread; "  # the shutdown closes storages in a thread
    "sys.exit(zodbserver.cli.main(sys.argv[1:]))",
]


def process_ids(pid: int, field: str) -> set[int]:
    """The numbers on the ``field:`` line of /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, values = line.partition(":")
        if name == field:
            return {int(value) for value in values.split()}
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_fg_as_root_runs_as_the_given_user(tmp_path):
    # The suite runs as root (README): switching users needs it.
    assert os.geteuid() == 0, "switching users needs root"
    import pwd
    import tempfile

    nobody = pwd.getpwnam("nobody")
    # A directory that user can reach (pytest's tmp_path is root's, 0700).
    workdir = Path(tempfile.mkdtemp(prefix="zodbserver-user-"))
    workdir.chmod(0o755)
    var = workdir / "var"
    var.mkdir()
    os.chown(var, nobody.pw_uid, nobody.pw_gid)
    args = [*ANY_PORT, "--var", str(var), "--user", "nobody", "fg"]
    try:
        with subprocess.Popen(
            [*PREIMPORTED_CLI, *args], cwd=workdir, stderr=subprocess.PIPE
        ) as process:
            try:
                port = _port_from(process, timeout=COMMAND_TIMEOUT)
                # Real, effective, saved and filesystem ids, all switched.
                assert process_ids(process.pid, "Uid") == {nobody.pw_uid}
                assert process_ids(process.pid, "Gid") == {nobody.pw_gid}
                assert 0 not in process_ids(process.pid, "Groups")
                assert commit_and_read(port, "as-nobody") == {"as-nobody": 1}
                for name in ("filestorage/Data.fs", "zeoserver.pid"):
                    assert (var / name).stat().st_uid == nobody.pw_uid, name
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=COMMAND_TIMEOUT) == 0
            finally:
                if process.poll() is None:
                    process.kill()
    finally:
        subprocess.run(["rm", "-rf", str(workdir)], check=True)


def test_unknown_user_exits_2(workdir):
    result = zeoserver("--user", "no-such-user-here", "status", cwd=workdir)
    assert result.returncode == 2
    assert "--user: no such user: 'no-such-user-here'" in result.stderr


def test_only_root_switches_users(workdir, monkeypatch, capsys):
    """Started as another user, --user fails before anything is created."""
    import pwd

    import zodbserver.cli

    nobody = pwd.getpwnam("nobody")
    monkeypatch.setattr(os, "geteuid", lambda: nobody.pw_uid)
    var = workdir / "var"
    status = zodbserver.cli.main(["--var", str(var), "--user", "root", "fg"])
    assert status == 1
    assert "only root can switch to another user; running as nobody" in (
        capsys.readouterr().err
    )
    assert not var.exists()


def test_the_same_user_is_no_switch(workdir):
    import pwd

    me = pwd.getpwuid(os.geteuid()).pw_name
    with foreground(*ANY_PORT, "--user", me, cwd=workdir) as (process, port):
        assert commit_and_read(port, "same") == {"same": 1}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=COMMAND_TIMEOUT) == 0
