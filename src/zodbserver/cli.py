"""The ``zeoserver`` command: run, start, stop and inspect a database server.

    zeoserver [OPTIONS] fg | start | stop | restart | status | logtail

The options say which server: ``-C zeo.conf``, or ``-a ADDRESS`` and
``-f Data.fs`` on their own, with ``--var DIR`` (default ``./var``) holding
the pid file, the log and, without ``-C`` or ``-f``, the database
(``var/filestorage/Data.fs``, blobs in ``var/blobstorage``).  Give every
command the same options: they find the server through its pid file.
Command-line options override the file; ``-f`` replaces its storages.

Exit codes, LSB-like: 0 success; 1 failure (``start`` when already running,
``stop`` when not running, a server that fails to start or to stop);
2 a wrong command line or configuration file; ``status`` answers 0 running,
1 not running but a stale pid file remains (the process died), 3 not running.
``stop`` on a stopped server is an error here (LSB init scripts call that
success) so that a mistyped ``--var`` does not pass unnoticed; ``restart``
starts a stopped server.

Daemonizing: our own double fork rather than zdaemon.  zdaemon's ``start``
returns as soon as its supervisor process has forked the server, before
storages open or the socket listens, so it cannot report "Data.fs is locked"
or "address in use" to the operator, and it adds a supervisor process and a
control socket.  ``start`` here forks twice (so the server has no parent to
wait for it, and is no session leader that a terminal could be attached
to), the grandchild ``exec``s a fresh interpreter running ``fg --daemon``
(so no state of the forking process leaks in), stdin is /dev/null and
stdout/stderr go to the log file, and a pipe carries back either "listening
on ADDRESS" or the error that stopped it.  Crash restarts belong to the
service manager: run ``zeoserver fg`` under systemd, supervisord or a
container runtime for those.

The pid file is locked (``flock``) for as long as the server runs: that lock,
not the pid's mere existence, is what ``status`` and ``stop`` trust, so a
stale file left by ``kill -9`` is recognised.  The command writes the pid file
itself (the server core is told not to), also in read-only mode, because
``stop`` and ``status`` need it.

``--user NAME`` (plone.recipe.zeoserver's ``effective-user``): ``fg``,
``start`` and ``restart``, started as root, switch to that user and its
groups before they create a directory, open the log, lock the pid file or
open a storage, so every file the server writes is the user's (the
directories it uses must be writable by that user).  Started as that user
already, it changes nothing; started as any other user, it fails.

Signals (handled by the server core): TERM and INT shut down gracefully and
exit 0; USR2 reopens the log files (for logrotate).  HUP exits 1 meaning
"restart me", as in ZEO: ``fg`` exits 1 for its service manager to restart
it, a ``start``ed server re-executes itself in place (same pid).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import pwd
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from .config import (
    ServerConfig,
    filestorage,
    load_config,
    msgpack_from_environment,
    open_storages,
    parse_address,
    seconds,
)
from .errors import ConfigurationError, StorageInUseError
from .pidfile import AlreadyRunning, PidFile, probe
from .server.settings import Address, ServerSettings

PROGRAM = "zeoserver"
log = logging.getLogger("zodbserver.cli")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
STATUS_STALE = 1
STATUS_NOT_RUNNING = 3

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"

#: Seconds ``start`` waits for the server to listen (storages may need to
#: build their index first) and ``stop`` waits for it to exit.
DEFAULT_START_TIMEOUT = 300.0
DEFAULT_STOP_TIMEOUT = 60.0


# -- what to run: options and zeo.conf combined ------------------------------


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


def make_plan(args: argparse.Namespace) -> Plan:
    """Combine zeo.conf (if any) with the command-line overrides."""
    var = os.path.abspath(args.var)
    directories = [var]
    options = ["--var", var]
    if args.configure:
        config = load_config(args.configure)
        options += ["-C", os.path.abspath(args.configure)]
    else:
        config = ServerConfig(
            settings=ServerSettings(msgpack=msgpack_from_environment()),
            storages=(),
        )
    if args.filename:
        paths = [os.path.abspath(path) for path in args.filename]
        storages = tuple(
            filestorage(str(number), path) for number, path in enumerate(paths, 1)
        )
        config = config.replace(storages=storages)
        for path in paths:
            options += ["-f", path]
    elif not args.configure:
        data_fs = os.path.join(var, "filestorage", "Data.fs")
        blobs = os.path.join(var, "blobstorage")
        config = config.replace(storages=(filestorage("1", data_fs, blobs),))
        directories.append(os.path.dirname(data_fs))

    settings = config.settings
    if args.address is not None:
        settings = dataclasses.replace(settings, address=args.address)
        options += ["-a", args.address_text]
    if args.transaction_timeout is not None:
        settings = dataclasses.replace(
            settings, transaction_timeout=args.transaction_timeout
        )
        options += ["-t", repr(args.transaction_timeout)]
    if args.read_only:
        settings = dataclasses.replace(settings, read_only=True)
        options.append("--read-only")
    if args.user is not None:
        options += ["--user", args.user]
    pid_file = settings.pid_filename or os.path.join(var, "zeoserver.pid")
    # The command keeps the pid file (see the module docstring).
    config = config.replace(settings=dataclasses.replace(settings, pid_filename=None))

    log_files = config.log_files
    if log_files:
        log_file = log_files[0]
    else:
        log_file = os.path.join(var, "log", "zeoserver.log")
        directories.append(os.path.dirname(log_file))
    return Plan(
        config=config,
        var=var,
        pid_file=os.path.abspath(pid_file),
        log_file=os.path.abspath(log_file),
        directories=tuple(directories),
        options=tuple(options),
    )


def format_address(address: Address | Sequence[object]) -> str:
    if isinstance(address, str):
        return address
    host, port = str(address[0]), address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- running the server (fg, and the daemon that start forks) ----------------


def serve(plan: Plan, *, daemon: bool, ready_fd: int | None) -> int:
    """Run the server in this process until it is told to stop."""
    from .server.main import run

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
    except AlreadyRunning as error:
        return reporter.fail(str(error))
    restart = False
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
        try:
            status = run(
                plan.config.settings,
                storages,
                reopen_logs=reopen_logs,
                ready=reporter.ready,
            )
        except Exception as error:
            # E.g. the address is in use; run() has closed the storages.
            log.exception("the server failed")
            return reporter.fail(f"the server failed: {error}")
        log.info("server stopped (exit status %d)", status)
        restart = daemon and status == 1
        return status
    finally:
        pid_file.release(remove=not restart)
        reporter.close()
        if restart:
            _reexec(plan)


class _Reporter:
    """Tells the waiting ``start`` (through a pipe) how starting went."""

    def __init__(self, fd: int | None, *, echo: bool) -> None:
        self._fd = fd
        self._echo = echo  # print failures on stderr unless logging does

    def ready(self, address: Address) -> None:
        log.info("listening on %s", format_address(address))
        self._send(f"READY {os.getpid()} {format_address(address)}")

    def fail(self, message: str) -> int:
        log.error("%s", message)
        if self._echo and not _logs_to_stderr():
            print(f"{PROGRAM}: {message}", file=sys.stderr)
        self._send(f"ERROR {message}")
        return EXIT_FAILURE

    def _send(self, line: str) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._fd, line.replace("\n", " ").encode() + b"\n")
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


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


def _daemon_argv(plan: Plan, ready_fd: int | None) -> list[str]:
    argv = [sys.executable, "-m", "zodbserver.cli", *plan.options, "fg", "--daemon"]
    if ready_fd is not None:
        argv += ["--ready-fd", str(ready_fd)]
    return argv


def _reexec(plan: Plan) -> None:
    logging.shutdown()
    argv = _daemon_argv(plan, None)
    os.execv(argv[0], argv)


# -- the user the server runs as ---------------------------------------------


def find_user(name: str) -> pwd.struct_passwd:
    """The account named ``name`` (or numbered, as ``1000``)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        if name.isdigit():
            with contextlib.suppress(KeyError):
                return pwd.getpwuid(int(name))
    raise ConfigurationError(f"--user: no such user: {name!r}")


def switch_user(user: pwd.struct_passwd) -> str | None:
    """Run as ``user`` from now on; why that is impossible, or None."""
    current = os.geteuid()
    if current == user.pw_uid:
        return None
    if current != 0:
        try:
            current_name = pwd.getpwuid(current).pw_name
        except KeyError:
            current_name = str(current)
        return (
            f"--user {user.pw_name}: only root can switch to another user; "
            f"running as {current_name}"
        )
    # Groups first: after setuid there is no right left to change them.
    os.initgroups(user.pw_name, user.pw_gid)
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    os.environ.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
    return None


def _become(user: pwd.struct_passwd | None) -> int | None:
    """Switch to ``user`` if one is given; an exit status if that fails."""
    if user is None:
        return None
    problem = switch_user(user)
    if problem is None:
        return None
    print(f"{PROGRAM}: {problem}", file=sys.stderr)
    return EXIT_FAILURE


# -- start, stop, status, logtail --------------------------------------------


def start(plan: Plan, timeout: float) -> int:
    state, pid = probe(plan.pid_file)
    if state == "running":
        print(AlreadyRunning(pid, plan.pid_file), file=sys.stderr)
        return EXIT_FAILURE
    try:
        for directory in plan.directories:
            os.makedirs(directory, exist_ok=True)
        output = os.open(plan.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as error:
        print(
            f"{PROGRAM}: cannot prepare {error.filename}: {error.strerror}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    log_size = os.fstat(output).st_size
    read_end, write_end = os.pipe()
    try:
        _spawn_daemon(_daemon_argv(plan, write_end), write_end, output)
    finally:
        os.close(write_end)
        os.close(output)
    with os.fdopen(read_end, "rb") as pipe:
        report = _read_report(pipe.fileno(), timeout)
    if report.startswith("READY "):
        _, pid_text, address = report.split(" ", 2)
        print(f"{PROGRAM} started (pid {pid_text}), listening on {address}")
        return EXIT_OK
    if report.startswith("ERROR "):
        problem = report[len("ERROR ") :]
    elif report:
        problem = report
    elif probe(plan.pid_file)[0] == "running":
        problem = f"not listening after {timeout:g} seconds; it is still starting"
    else:
        problem = "the server process exited before it listened"
    print(f"{PROGRAM} failed to start: {problem}", file=sys.stderr)
    _print_log_since(plan.log_file, log_size)
    return EXIT_FAILURE


def _spawn_daemon(argv: list[str], ready_fd: int, output: int) -> None:
    """Double fork; the grandchild execs ``argv``.  Returns in the parent."""
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    # Between fork and exec only system calls: nothing that takes locks.
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.set_inheritable(ready_fd, True)
        os.execv(argv[0], argv)
    finally:
        os._exit(127)


def _read_report(fd: int, timeout: float) -> str:
    """The first line the daemon sends, or "" on end of file or timeout."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode("utf-8", "replace")


def _print_log_since(log_file: str, offset: int, limit: int = 20) -> None:
    try:
        with open(log_file, "rb") as file:
            file.seek(offset)
            lines = file.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return
    if lines:
        print(f"--- the last lines of {log_file}:", file=sys.stderr)
        for line in lines[-limit:]:
            print(line, file=sys.stderr)


def stop(plan: Plan, timeout: float) -> int:
    state, pid = probe(plan.pid_file)
    if state != "running" or pid is None:
        print(f"{PROGRAM} is not running ({plan.pid_file})", file=sys.stderr)
        return EXIT_FAILURE
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print(f"{PROGRAM} is not running (pid {pid} is gone)", file=sys.stderr)
        return EXIT_FAILURE
    if not _wait_for_exit(pid, plan.pid_file, timeout):
        print(
            f"{PROGRAM} (pid {pid}) did not stop within {timeout:g} seconds; "
            "it may still be finishing a transaction, or send it SIGKILL",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    print(f"{PROGRAM} stopped (pid {pid})")
    return EXIT_OK


def _wait_for_exit(pid: int, pid_file: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        # Readable once the process has exited: no polling.
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            if not poller.poll(max(0.0, timeout) * 1000):
                return False
        finally:
            os.close(pidfd)
    # The server unlocks its pid file as it exits (or as the kernel closes
    # its files); wait for that too, so that a following start succeeds.
    while probe(pid_file)[0] == "running":
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def status(plan: Plan) -> int:
    state, pid = probe(plan.pid_file)
    if state == "running":
        print(f"{PROGRAM} is running (pid {pid})")
        return EXIT_OK
    if state == "stale":
        print(
            f"{PROGRAM} is not running, but its pid file {plan.pid_file} "
            f"remains (pid {pid}): the process died without cleaning up"
        )
        return STATUS_STALE
    print(f"{PROGRAM} is not running")
    return STATUS_NOT_RUNNING


def logtail(plan: Plan, lines: int, follow: bool) -> int:
    try:
        file: BinaryIO = open(plan.log_file, "rb")  # noqa: SIM115 - followed
    except OSError as error:
        print(
            f"{PROGRAM}: no log file: {plan.log_file}: {error.strerror}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    try:
        for line in _last_lines(file, lines):
            sys.stdout.write(line)
        sys.stdout.flush()
        if follow:
            file = _follow(file, plan.log_file)
    except KeyboardInterrupt:
        pass
    finally:
        file.close()
    return EXIT_OK


def _last_lines(file: BinaryIO, count: int) -> list[str]:
    """The file's last ``count`` lines; leaves the file at its end."""
    end = file.seek(0, os.SEEK_END)
    block = 64 * 1024
    start = end
    data = b""
    while start > 0 and data.count(b"\n") <= count:
        start = max(0, start - block)
        file.seek(start)
        data = file.read(end - start)
    file.seek(end)
    lines = data.decode("utf-8", "replace").splitlines(keepends=True)
    if start > 0:
        lines = lines[1:]  # the first one is probably cut
    return lines[-count:] if count > 0 else []


def _follow(file: BinaryIO, path: str) -> BinaryIO:
    """Print what is appended, across logrotate, until interrupted."""
    while True:
        chunk = file.read()
        if chunk:
            sys.stdout.write(chunk.decode("utf-8", "replace"))
            sys.stdout.flush()
            continue
        try:
            rotated = os.stat(path).st_ino != os.fstat(file.fileno()).st_ino
        except FileNotFoundError:
            rotated = False
        if rotated:
            file.close()
            file = open(path, "rb")  # noqa: SIM115
            continue
        time.sleep(0.5)


# -- the command line --------------------------------------------------------


def _address_text(text: str) -> str:
    # Checked here, kept as text: a daemon is handed the same option.
    try:
        parse_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _seconds(text: str) -> float:
    try:
        return seconds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _server_options(suppress: bool) -> argparse.ArgumentParser:
    """The options naming the server, for the main parser and each command.

    In the commands their defaults are suppressed, so that an option given
    before the command is not reset by the command's own parser.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("server options")
    group.add_argument(
        "-C",
        "--configure",
        metavar="ZEO.CONF",
        default=default(None),
        help="the configuration file (ZEO's zeo.conf format)",
    )
    group.add_argument(
        "-a",
        "--address",
        metavar="ADDRESS",
        dest="address_text",
        type=_address_text,
        default=default(None),
        help="PORT (on 127.0.0.1), HOST:PORT, or a Unix socket PATH "
        "(containing '/'); default 127.0.0.1:8100",
    )
    group.add_argument(
        "-f",
        "--filename",
        metavar="DATA.FS",
        action="append",
        default=default(None),
        help="serve this FileStorage (repeat for storages '1', '2', ...); "
        "replaces the storages of -C; default VAR/filestorage/Data.fs",
    )
    group.add_argument(
        "-t",
        "--transaction-timeout",
        metavar="SECONDS",
        type=_seconds,
        default=default(None),
        help="disconnect a client that holds the commit lock longer",
    )
    group.add_argument(
        "--read-only",
        action="store_true",
        default=default(False),
        help="refuse every write",
    )
    group.add_argument(
        "--user",
        metavar="NAME",
        default=default(None),
        help="run the server as this user (fg, start, restart; needs root "
        "unless already that user)",
    )
    group.add_argument(
        "--var",
        metavar="DIR",
        default=default("var"),
        help="directory of the pid file (zeoserver.pid), the log "
        "(log/zeoserver.log) and the default database; default ./var",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Run and control a ZODB database server (ZEO-compatible).",
        parents=[_server_options(suppress=False)],
        epilog="Give every command the same server options. "
        "Run 'zeoserver COMMAND --help' for a command's own options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = [_server_options(suppress=True)]

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, parents=common, help=summary, description=description
        )

    fg = command(
        "fg",
        "run the server in the foreground",
        "Run the server in this process, logging to stderr unless zeo.conf "
        "has an <eventlog>. For systemd, supervisord and containers. "
        "SIGTERM/SIGINT stop it (exit 0); SIGHUP exits 1 to be restarted; "
        "SIGUSR2 reopens the log files.",
    )
    fg.add_argument("--daemon", action="store_true", help=argparse.SUPPRESS)
    fg.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)

    start = command(
        "start",
        "start the server in the background",
        "Start the server as a daemon and return once it listens (exit 0), "
        "or print why it could not start and the log's last lines (exit 1). "
        "Exits 1 if it is already running.",
    )
    _timeout_option(start, DEFAULT_START_TIMEOUT, "to wait for the server to listen")
    stop = command(
        "stop",
        "stop the background server",
        "Send the server SIGTERM and wait until it has exited (exit 0). "
        "Exits 1 if it is not running or does not stop in time.",
    )
    _timeout_option(stop, DEFAULT_STOP_TIMEOUT, "to wait for the server to exit")
    restart = command(
        "restart",
        "stop the server if it runs, then start it",
        "Stop the server if it is running, then start it as 'start' does.",
    )
    _timeout_option(
        restart, DEFAULT_START_TIMEOUT, "to wait for each of stopping and starting"
    )
    command(
        "status",
        "tell whether the server runs",
        "Print whether the server is running. Exit 0 running, 3 not running, "
        "1 not running but a stale pid file remains.",
    )
    logtail = command(
        "logtail",
        "show the end of the log, following it",
        "Print the last lines of the server's log file, then follow it "
        "(like tail -f) until interrupted with Ctrl-C.",
    )
    logtail.add_argument(
        "-n", "--lines", type=int, default=10, help="lines to show (default 10)"
    )
    logtail.add_argument(
        "--no-follow", action="store_true", help="print and exit, do not follow"
    )
    return parser


def _timeout_option(
    parser: argparse.ArgumentParser, default: float, purpose: str
) -> None:
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_seconds,
        default=default,
        help=f"seconds {purpose} (default {default:g})",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exited:  # --help, or argparse's own usage error
        return exited.code if isinstance(exited.code, int) else EXIT_USAGE
    text = args.address_text
    args.address = None if text is None else parse_address(text)
    try:
        user = None if args.user is None else find_user(args.user)
        plan = make_plan(args)
    except ConfigurationError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return EXIT_USAGE

    if args.command == "fg":
        return _become(user) or serve(plan, daemon=args.daemon, ready_fd=args.ready_fd)
    if args.command == "start":
        return _become(user) or start(plan, args.timeout)
    if args.command == "stop":
        return stop(plan, args.timeout)
    if args.command == "restart":
        if probe(plan.pid_file)[0] == "running":
            stopped = stop(plan, args.timeout)
            if stopped != EXIT_OK:
                return stopped
        return _become(user) or start(plan, args.timeout)
    if args.command == "status":
        return status(plan)
    if args.command == "logtail":
        return logtail(plan, args.lines, follow=not args.no_follow)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
