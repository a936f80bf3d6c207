"""``zeoserver fg``: the server process itself, in the foreground or started.

:func:`serve` prepares the directories and the log, locks the pid file,
opens the storages and runs the server core until it is told to stop.  Run
by hand, failures go to stderr; run by ``zeoserver start`` (``--daemon
--ready-fd FD``), they go to the log and back through the start-up report
pipe (:mod:`~zodbserver.daemon`).  The command writes the pid file itself
(the server core is told not to), also in read-only mode, because ``stop``
and ``status`` need it.  A daemon that gets SIGHUP ("restart me") re-executes
itself in place (same pid); ``fg`` exits 1 for its service manager instead.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ZODB.interfaces

from .addresses import Address, format_address
from .config import ServerConfig, open_storages
from .daemon import ReportPipe
from .errors import StorageInUseError
from .exit_codes import EXIT_FAILURE, EXIT_RESTART
from .pidfile import AlreadyRunningError, PidFile

PROGRAM = "zeoserver"
log = logging.getLogger("zodbserver.cli")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"


@dataclass(frozen=True)
class Plan:
    """One server's configuration and its files, as the options name them."""

    config: ServerConfig
    var: str
    pid_file: str
    #: The file logtail shows and a daemon's stderr goes to.
    log_file: str
    #: Directories to create before the server starts.
    directories: tuple[str, ...]
    #: The command-line options that recreate this plan (for the daemon).
    options: tuple[str, ...]


def serve(plan: Plan, *, daemon: bool, ready_fd: int | None) -> int:
    """Run the server in this process until it is told to stop."""
    from .server.main import run
    from .server.monitor import Monitor

    reporter = _Reporter(ready_fd, echo=not daemon)
    try:
        for directory in plan.directories:
            os.makedirs(directory, exist_ok=True)
        reopen_logs = _configure_logging(plan, daemon=daemon)
    except OSError as error:
        return reporter.fail(f"cannot prepare {error.filename}: {error.strerror}")
    pid_file = PidFile(plan.pid_file)
    try:
        pid_file.acquire()
    except AlreadyRunningError as error:
        return reporter.fail(str(error))
    restart = False
    monitor = None
    monitor_address = plan.config.settings.monitor_address
    if monitor_address is not None:
        # Before the storages open, so that /ready can say "not yet".
        monitor = Monitor(monitor_address)
        try:
            monitor.start()
        except OSError as error:
            pid_file.release(remove=True)
            return reporter.fail(
                f"cannot listen on monitor-address "
                f"{format_address(monitor_address)}: {error.strerror}"
            )
    try:
        storages = open_storages(plan.config)
    except StorageInUseError as error:
        return reporter.fail(str(error))
    except Exception as error:
        log.exception("cannot open the storages")
        return reporter.fail(f"cannot open the storages: {error}")
    else:
        names = ", ".join(repr(name) for name in storages)
        log.info("serving storage(s) %s; pid %d", names, os.getpid())
        _warn_without_blobs(storages)
        try:
            status = run(
                plan.config.settings,
                storages,
                reopen_logs=reopen_logs,
                ready=reporter.ready,
                monitor=monitor,
            )
        except Exception as error:
            # E.g. the address is in use; run() has closed the storages.
            log.exception("the server failed")
            return reporter.fail(f"the server failed: {error}")
        log.info("server stopped (exit status %d)", status)
        restart = daemon and status == EXIT_RESTART
        return status
    finally:
        if monitor is not None:
            monitor.close()
        pid_file.release(remove=not restart)
        reporter.close()
        if restart:
            _reexec(plan)


def _warn_without_blobs(storages: Mapping[str, Any]) -> None:
    for name, storage in storages.items():
        if not ZODB.interfaces.IBlobStorage.providedBy(storage):
            log.warning(
                "storage %r has no blob directory: commits with blobs will "
                "fail; give it one (blob-dir in its zeo.conf section, "
                "--blob-dir with -f)",
                name,
            )


def daemon_argv(plan: Plan) -> list[str]:
    """The command line of the daemon that serves ``plan``."""
    return [sys.executable, "-m", "zodbserver.cli", *plan.options, "fg", "--daemon"]


class _Reporter:
    """Logs how starting went and tells a waiting ``start`` through its pipe."""

    def __init__(self, fd: int | None, *, echo: bool) -> None:
        self._pipe = ReportPipe(fd)
        self._echo = echo  # print failures on stderr unless logging does

    def ready(self, address: Address) -> None:
        log.info("listening on %s", format_address(address))
        self._pipe.ready(format_address(address))

    def fail(self, message: str) -> int:
        log.error("%s", message)
        if self._echo and not _logs_to_stderr():
            print(f"{PROGRAM}: {message}", file=sys.stderr)
        self._pipe.failed(message, EXIT_FAILURE)
        return EXIT_FAILURE

    def close(self) -> None:
        self._pipe.close()


def _logs_to_stderr() -> bool:
    return any(
        getattr(handler, "stream", None) is sys.stderr
        for handler in logging.getLogger().handlers
    )


def _configure_logging(plan: Plan, *, daemon: bool) -> Callable[[], None]:
    """Set up the root logger; return the function that reopens log files."""
    from ZConfig.components.logger import loghandler

    if plan.config.eventlog is not None:
        plan.config.eventlog()
    else:
        handler: logging.Handler
        if daemon:
            handler = loghandler.FileHandler(plan.log_file)
        else:
            handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)

    def reopen_logs() -> None:
        loghandler.reopenFiles()
        if daemon:
            # Tracebacks written straight to stderr follow the log file too.
            _redirect_output(plan.log_file)
        log.info("log files reopened")

    return reopen_logs


def _redirect_output(log_file: str) -> None:
    fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _reexec(plan: Plan) -> None:
    logging.shutdown()
    argv = daemon_argv(plan)
    os.execv(argv[0], argv)
