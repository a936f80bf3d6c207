"""A real PostgreSQL server for the tests, started and stopped by them.

Debian's server binaries (``/usr/lib/postgresql/<version>/bin``, from the
``postgresql`` package that ``run-tests`` installs when they are missing)
run ``initdb`` into a temporary directory and ``postgres`` on a Unix
socket in that directory, with no TCP port.  PostgreSQL refuses to run as
root, so when the tests do, the server runs as ``nobody``.  The server is
stopped by its PID (SIGINT: PostgreSQL's fast shutdown); ``kill`` stops
it at once (SIGKILL) to test what survives, and ``remove`` (SIGQUIT, an
immediate shutdown) before deleting it.  ``standby_of`` makes a streaming
standby of a running server (``pg_basebackup``), which ``SELECT
pg_promote()`` makes a primary.

Each test gets a database of its own (``new_database``) in one server.
"""

from __future__ import annotations

import glob
import os
import pwd
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg2

from support.waiting import wait_until

START_TIMEOUT = 60.0
ROLE = "zodb"


def binaries() -> Path:
    """The directory of Debian's newest PostgreSQL server binaries."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    if not found:
        raise RuntimeError(
            "no PostgreSQL server binaries under /usr/lib/postgresql: "
            "install Debian's postgresql package (run-tests does)"
        )
    return Path(found[-1]).parent


class PostgresServer:
    """One PostgreSQL server in a directory of its own."""

    def __init__(
        self,
        settings: Sequence[str] = (),
        *,
        standby_of: PostgresServer | None = None,
        standby_name: str = "standby",
    ) -> None:
        """``settings``: more ``name=value`` server settings, on top of the
        tests' own (``shared_preload_libraries=pg_stat_statements``, say).
        ``standby_of``: a streaming standby of that (running) server, a
        base backup of it that follows it as ``standby_name``."""
        self.settings = tuple(settings)
        self.directory = Path(tempfile.mkdtemp(prefix="zodbpg-"))
        self.data = self.directory / "data"
        self.socket_dir = str(self.directory)
        self._user = pwd.getpwnam("nobody") if os.getuid() == 0 else None
        if self._user is not None:
            os.chown(self.directory, self._user.pw_uid, self._user.pw_gid)
        self.process: subprocess.Popen[bytes] | None = None
        self._databases = 0
        if standby_of is None:
            self._run(
                [
                    str(binaries() / "initdb"),
                    "--auth=trust",
                    f"--username={ROLE}",
                    "--encoding=UTF8",
                    "--no-sync",
                    str(self.data),
                ]
            )
        else:
            self._copy_for_streaming(standby_of, standby_name)

    def _copy_for_streaming(self, primary: PostgresServer, name: str) -> None:
        self._run(
            [
                str(binaries() / "pg_basebackup"),
                f"--pgdata={self.data}",
                f"--host={primary.socket_dir}",
                f"--username={ROLE}",
                "--wal-method=stream",
                "--no-sync",
            ]
        )
        conninfo = f"host={primary.socket_dir} user={ROLE} application_name={name}"
        with open(self.data / "postgresql.auto.conf", "a") as conf:
            conf.write(f"primary_conninfo = '{conninfo}'\n")
        (self.data / "standby.signal").touch()

    def query(self, sql: str) -> list[tuple[object, ...]]:
        """Run ``sql`` in the ``postgres`` database, autocommit; its rows."""
        connection = psycopg2.connect(self.dsn("postgres"))
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return list(cursor.fetchall()) if cursor.description else []
        finally:
            connection.close()

    def _user_args(self) -> dict[str, int]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid}

    def _run(self, command: list[str]) -> None:
        result = subprocess.run(
            command, capture_output=True, cwd=self.directory, **self._user_args()
        )
        if result.returncode:
            raise RuntimeError(
                f"{command[0]} failed: {result.stderr.decode(errors='replace')}"
            )

    def start(self) -> None:
        log = open(self.directory / "postgres.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                str(binaries() / "postgres"),
                "-D",
                str(self.data),
                "-k",
                self.socket_dir,
                "-c",
                "listen_addresses=",
                "-c",
                "max_connections=200",
                # The tests kill processes, never the machine: what a
                # commit wrote reaches the file system (synchronous_commit
                # stays on), and only an OS crash would need the fsync.
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_prepared_transactions=10",
                "-c",
                "log_disconnections=on",
                *(argument for item in self.settings for argument in ("-c", item)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            **self._user_args(),
        )
        log.close()
        wait_until(self._accepts, timeout=START_TIMEOUT, what="PostgreSQL to start")

    def _accepts(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited: {self.log()[-2000:]}")
        try:
            psycopg2.connect(self.dsn("postgres")).close()
        except psycopg2.OperationalError:
            return False
        return True

    def log(self) -> str:
        path = self.directory / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def dsn(self, database: str) -> str:
        return f"dbname={database} user={ROLE} host={self.socket_dir}"

    def new_database(self, template: str | None = None) -> str:
        """A new database, empty or a copy of ``template`` (a database no
        one is connected to); its name."""
        self._databases += 1
        name = f"zodb{os.getpid()}_{self._databases}_{int(time.time() * 1000)}"
        # FILE_COPY: a third faster than logging the copy to the WAL.
        copy = f" TEMPLATE {template} STRATEGY FILE_COPY" if template else ""
        connection = psycopg2.connect(self.dsn("postgres"))
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {name}{copy}")
        finally:
            connection.close()
        return name

    def stop(self) -> None:
        """Fast shutdown, by PID."""
        self._signal(signal.SIGINT)

    def kill(self) -> None:
        """Stop at once: no shutdown code runs (SIGKILL)."""
        self._signal(signal.SIGKILL)
        # Its children (backends) go when they notice the postmaster gone;
        # the next start waits for the shared memory they hold.

    def _signal(self, signum: int) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        process.wait(timeout=60)
        if signum == signal.SIGKILL:
            wait_until(
                lambda: not _backends_of(self.data),
                timeout=30,
                what="PostgreSQL's backends to exit",
            )

    def remove(self) -> None:
        """Stop at once and delete everything: an immediate shutdown
        (SIGQUIT) skips the checkpoint of data about to be deleted, and a
        process of its own deletes the directory (a run's databases take
        gigabytes, and seconds to delete) while the tests go on."""
        self._signal(signal.SIGQUIT)
        wait_until(
            lambda: not _backends_of(self.data),
            timeout=30,
            what="PostgreSQL's backends to exit",
        )
        # The shell starts rm in the background and exits: no child is left
        # for this process to wait for.
        subprocess.run(
            ["sh", "-c", 'rm -rf "$1" >/dev/null 2>&1 &', "sh", str(self.directory)],
            check=True,
        )


def _backends_of(data: Path) -> bool:
    """Some process still runs with ``data`` on its command line."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"postgres" in command and str(data).encode() in command:
            return True
    return False
