"""``bin/<instance>``: run a client instance's HTTP server.

    python -m zodbserver.instance -C instance.json fg | start | stop | status

``fg`` serves in the foreground with waitress until SIGTERM or SIGINT
(exit 0).  ``start`` runs ``fg`` as a daemon (:mod:`zodbserver.daemon`, as
``zeoserver start`` does; its output goes to the instance's log file) and
returns once the HTTP port listens, or reports why it could not (exit 1,
with the last lines the failed process logged: a locked Data.fs, a bad
zope.conf, ...).  ``stop`` sends SIGTERM and waits for the process to go
(exit 1 when not running).  ``fg`` exits 75 when the application's startup
conflicted with another instance starting at the same time (a Zope
instance's first commits to a new database); ``start`` then runs it again,
as a supervisor would.  ``status`` answers 0 running, 1 dead with a stale
pid file, 3 not running -- the exit codes of ``zeoserver``
(:mod:`zodbserver.exit_codes`).  The pid file is locked while the instance
runs, as the server's is.  The application is ``wsgi.make_app``'s: the
configured WSGI application in a transaction per request, or a real Zope
(``application = zope``) that manages its own transactions.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import warnings
from typing import Any

from ZODB.POSException import ConflictError

from .. import daemon
from ..errors import ZodbServerError
from ..exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_TRY_AGAIN
from ..pidfile import AlreadyRunningError, PidFile, probe
from .access_log import AccessLog, open_access_log
from .wsgi import load_settings, make_app

PROGRAM = "instance"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
FAILURE_LINES = 5
START_ATTEMPTS = 3
STARTUP_CONFLICT = (
    "another instance changed the database while this one was setting it "
    "up (both starting at once on a new database); run it again"
)


def main(argv: list[str] | None = None) -> int:
    """Run ``bin/<instance> ARGV``; the exit status."""
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="Control a zodbserver client instance."
    )
    parser.add_argument("-C", "--config", required=True, help="instance.json")
    parser.add_argument("command", choices=["fg", "start", "stop", "status"])
    parser.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    if args.command == "fg":
        return fg(args.config, settings, ready_fd=args.ready_fd)
    if args.command == "start":
        return start(args.config, settings)
    if args.command == "stop":
        return daemon.stop(PROGRAM, settings["pid-file"], STOP_TIMEOUT)
    return daemon.status(PROGRAM, settings["pid-file"])


def fg(config_path: str, settings: dict[str, Any], ready_fd: int | None = None) -> int:
    """Serve until SIGTERM or SIGINT; tell a waiting ``start`` how it went."""
    logging.basicConfig(
        level=settings.get("log-level", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    report = daemon.ReportPipe(ready_fd)
    pid_file = PidFile(settings["pid-file"])
    try:
        try:
            prepare(settings)
        except OSError as error:
            return _failed(
                report,
                f"instance cannot prepare {error.filename}: {error.strerror}",
                EXIT_FAILURE,
            )
        try:
            pid_file.acquire()
        except AlreadyRunningError as error:
            return _failed(report, str(error), EXIT_FAILURE)
        try:
            status, problem = _serve(config_path, settings, report)
        finally:
            # Before the report: a ``start`` trying again must find it unlocked.
            pid_file.release()
        if problem is not None:
            return _failed(report, problem, status)
        return status
    finally:
        report.close()


def prepare(settings: dict[str, Any]) -> None:
    """What the process needs before the application starts.

    The umask, the warnings filter, the directories of the var tree (a
    wiped ``var/`` comes back as buildout made it) and Zope's ``inituser``,
    which Zope deletes once it has made the user: written again when the
    part has ``user``, so that a new database gets its manager.
    """
    if settings.get("umask") is not None:
        os.umask(settings["umask"])
    if settings.get("deprecation-warnings"):
        warnings.simplefilter(settings["deprecation-warnings"], DeprecationWarning)
    for directory in settings.get("directories", ()):
        os.makedirs(directory, exist_ok=True)
    inituser = settings.get("inituser")
    if inituser and not os.path.exists(inituser["path"]):
        fd = os.open(inituser["path"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(inituser["text"])


def _listen(settings: dict[str, Any]) -> socket.socket:
    """The HTTP socket, bound and listening (waitress's backlog)."""
    host, port = settings["http-host"], settings["http-port"]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


def _serve(
    config_path: str, settings: dict[str, Any], report: daemon.ReportPipe
) -> tuple[int, str | None]:
    """Make the application and serve it; the exit status and the problem.

    With ``fast-listen`` (plone.recipe.zope2instance's ``http-fast-listen``,
    on by default) the port listens before the application is made, so
    that early requests wait in the backlog instead of being refused.
    """
    host, port = settings["http-host"], settings["http-port"]
    sock = None
    try:
        if settings.get("fast-listen"):
            sock = _listen(settings)
    except OSError as error:
        return EXIT_FAILURE, f"instance cannot listen on {host}:{port}: {error}"
    try:
        return _serve_on(config_path, settings, report, sock)
    finally:
        if sock is not None:
            sock.close()


def _serve_on(
    config_path: str,
    settings: dict[str, Any],
    report: daemon.ReportPipe,
    sock: socket.socket | None,
) -> tuple[int, str | None]:
    import waitress

    try:
        app = make_app(config_path)
    except ZodbServerError as error:
        return EXIT_FAILURE, f"instance cannot start: {error}"
    except ConflictError as error:
        return (
            EXIT_TRY_AGAIN,
            f"instance cannot start yet: {STARTUP_CONFLICT} ({error})",
        )
    try:
        host, port = settings["http-host"], settings["http-port"]
        served: Any = app
        if settings.get("access-log"):
            logger = open_access_log(
                settings["access-log"],
                settings.get("access-log-max-size", 0),
                settings.get("access-log-old-files", 1),
            )
            served = AccessLog(app, logger)
        where: dict[str, Any] = (
            {"sockets": [sock]} if sock is not None else {"host": host, "port": port}
        )
        server: Any = waitress.create_server(
            served,
            threads=settings.get("threads", 4),
            max_request_body_size=settings.get("max-request-body-size", 1073741824),
            max_request_header_size=settings.get("max-request-header-size", 262144),
            clear_untrusted_proxy_headers=settings.get(
                "clear-untrusted-proxy-headers", False
            ),
            **where,
        )

        def shut_down(signum: int, frame: Any) -> None:
            raise SystemExit(EXIT_OK)

        signal.signal(signal.SIGTERM, shut_down)
        signal.signal(signal.SIGINT, shut_down)
        logging.getLogger("zodbserver.instance").info(
            "serving http://%s:%s", host, port
        )
        report.ready(f"http://{host}:{port}")
        try:
            server.run()
        except SystemExit:
            pass
        finally:
            server.close()
    finally:
        app.close()
    return EXIT_OK, None


def _failed(report: daemon.ReportPipe, problem: str, status: int) -> int:
    print(problem, file=sys.stderr)
    report.failed(problem, status)
    return status


def start(config_path: str, settings: dict[str, Any]) -> int:
    """Start ``fg`` as a daemon; again while its start-up conflicts."""
    pid_file = settings["pid-file"]
    state, pid = probe(pid_file)
    if state == "running":
        print(f"instance is already running (pid {pid})", file=sys.stderr)
        return EXIT_FAILURE
    log_file = settings["log-file"]
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    for _attempt in range(START_ATTEMPTS):
        report, log_start = daemon.launch(
            _fg_argv(config_path),
            log_file=log_file,
            timeout=START_TIMEOUT,
            environment=_environment(),
        )
        if report.kind == "ready":
            print(f"instance started, pid {report.pid}")
            return EXIT_OK
        if report.kind != "error" or report.status != EXIT_TRY_AGAIN:
            break
    if report.kind == "timeout":
        state, pid = probe(pid_file)
        if state == "running" and pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        print(f"instance did not listen within {START_TIMEOUT:g}s", file=sys.stderr)
        return EXIT_FAILURE
    problem = report.detail or "it exited before it listened"
    print(f"instance failed to start: {problem}; see {log_file}", file=sys.stderr)
    daemon.print_log_since(log_file, log_start, FAILURE_LINES)
    return EXIT_FAILURE


def _fg_argv(config_path: str) -> list[str]:
    return [sys.executable, "-m", "zodbserver.instance", "-C", config_path, "fg"]


def _environment() -> dict[str, str]:
    """This environment, with the ``zodbserver`` package on ``PYTHONPATH``."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [package_parent, environment.get("PYTHONPATH")])
    )
    return environment
