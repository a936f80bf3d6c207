"""``bin/<instance>``: run a client instance's HTTP server.

    python -m zodbserver.instance -C instance.json fg | start | stop | status

``fg`` serves in the foreground with waitress until SIGTERM or SIGINT
(exit 0).  ``start`` runs ``fg`` as a detached process (its output goes to
the instance's log file) and returns once the HTTP port accepts
connections, or reports why it could not (exit 1, with the last lines the
failed process logged: a locked Data.fs, a bad zope.conf, ...).  ``stop``
sends SIGTERM and waits for the process to go (exit 1 when not running).
``fg`` exits 75 when the application's startup conflicted with another
instance starting at the same time (a Zope instance's first commits to a
new database); ``start`` then runs it again, as a supervisor would.
``status`` answers 0 running, 1 dead with a stale pid file, 3 not
running -- the exit codes of ``zeoserver``.  The pid file is locked while
the instance runs, as the server's is.  The application is
``wsgi.make_app``'s: the configured WSGI application in a transaction per
request, or a real Zope (``application = zope``) that manages its own
transactions.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from ZODB.POSException import ConflictError

from ..errors import ZodbServerError
from ..pidfile import AlreadyRunning, PidFile, probe
from .wsgi import load_settings, make_app

EXIT_OK = 0
EXIT_FAILURE = 1
STATUS_STALE = 1
STATUS_NOT_RUNNING = 3
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
FAILURE_LINES = 5
#: ``fg``'s exit status when starting raced another instance's first
#: commits to the database (EX_TEMPFAIL): running it again will work.
EXIT_TRY_AGAIN = 75
START_ATTEMPTS = 3
STARTUP_CONFLICT = (
    "another instance changed the database while this one was setting it "
    "up (both starting at once on a new database); run it again"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="instance", description="Control a zodbserver client instance."
    )
    parser.add_argument("-C", "--config", required=True, help="instance.json")
    parser.add_argument("command", choices=["fg", "start", "stop", "status"])
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    command = {"fg": fg, "start": start, "stop": stop, "status": status}
    return command[args.command](args.config, settings)


def fg(config_path: str, settings: dict[str, Any]) -> int:
    import waitress

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    pid_file = PidFile(settings["pid-file"])
    try:
        pid_file.acquire()
    except AlreadyRunning as error:
        print(error, file=sys.stderr)
        return EXIT_FAILURE
    try:
        try:
            app = make_app(config_path)
        except ZodbServerError as error:
            print(f"instance cannot start: {error}", file=sys.stderr)
            return EXIT_FAILURE
        except ConflictError as error:
            print(
                f"instance cannot start yet: {STARTUP_CONFLICT} ({error})",
                file=sys.stderr,
            )
            return EXIT_TRY_AGAIN
        try:
            server: Any = waitress.create_server(
                app, host=settings["http-host"], port=settings["http-port"]
            )

            def shut_down(signum: int, frame: Any) -> None:
                raise SystemExit(EXIT_OK)

            signal.signal(signal.SIGTERM, shut_down)
            signal.signal(signal.SIGINT, shut_down)
            logging.getLogger("zodbserver.instance").info(
                "serving http://%s:%s", settings["http-host"], settings["http-port"]
            )
            try:
                server.run()
            except SystemExit:
                pass
            finally:
                server.close()
        finally:
            app.close()
    finally:
        pid_file.release()
    return EXIT_OK


def start(config_path: str, settings: dict[str, Any]) -> int:
    state, pid = probe(settings["pid-file"])
    if state == "running":
        print(f"instance is already running (pid {pid})", file=sys.stderr)
        return EXIT_FAILURE
    log_file = settings["log-file"]
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    for attempt in range(1, START_ATTEMPTS + 1):
        process, log_start = _launch(config_path, log_file)
        if _wait_until_listening(process, settings):
            print(f"instance started, pid {process.pid}")
            return EXIT_OK
        if process.returncode is None:
            process.terminate()
            print(f"instance did not listen within {START_TIMEOUT:g}s", file=sys.stderr)
            return EXIT_FAILURE
        if process.returncode != EXIT_TRY_AGAIN or attempt == START_ATTEMPTS:
            print(
                f"instance failed to start (exit {process.returncode}); see {log_file}",
                file=sys.stderr,
            )
            print(_last_error(log_file, log_start), file=sys.stderr)
            return EXIT_FAILURE
    raise AssertionError("unreachable")  # pragma: no cover


def _launch(config_path: str, log_file: str) -> tuple[subprocess.Popen[bytes], int]:
    """``fg`` as a detached process logging to ``log_file``; where it starts."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [package_parent, environment.get("PYTHONPATH")])
    )
    with open(log_file, "ab") as log, open(os.devnull, "rb") as devnull:
        log_start = log.tell()
        process = subprocess.Popen(
            [sys.executable, "-m", "zodbserver.instance", "-C", config_path, "fg"],
            stdin=devnull,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env=environment,
        )
    return process, log_start


def _wait_until_listening(
    process: subprocess.Popen[bytes], settings: dict[str, Any]
) -> bool:
    """True once the HTTP port answers; False if the process exits first."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if _listening(settings["http-host"], settings["http-port"]):
            return True
        time.sleep(0.1)
    return False


def stop(config_path: str, settings: dict[str, Any]) -> int:
    state, pid = probe(settings["pid-file"])
    if state != "running" or pid is None:
        print("instance is not running", file=sys.stderr)
        return EXIT_FAILURE
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if probe(settings["pid-file"])[0] != "running" and not _alive(pid):
            print(f"instance stopped (pid {pid})")
            return EXIT_OK
        time.sleep(0.05)
    print(
        f"instance (pid {pid}) did not stop within {STOP_TIMEOUT:g}s", file=sys.stderr
    )
    return EXIT_FAILURE


def status(config_path: str, settings: dict[str, Any]) -> int:
    state, pid = probe(settings["pid-file"])
    if state == "running":
        print(f"instance is running (pid {pid})")
        return EXIT_OK
    if state == "stale":
        print(f"instance is not running; stale pid file (pid {pid})")
        return STATUS_STALE
    print("instance is not running")
    return STATUS_NOT_RUNNING


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _last_error(log_file: str, offset: int) -> str:
    """The last lines the failed ``fg`` wrote to the log: usually why."""
    try:
        with open(log_file, "rb") as log:
            log.seek(offset)
            lines = log.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-FAILURE_LINES:])
