"""Starting a command as a daemon, and stopping it through its pid file.

``zeoserver start`` and a client instance's ``bin/<instance> start`` both
launch their own ``fg`` this way (:func:`launch`), and ``stop`` and
``status`` of both go through the pid file (:func:`stop`, :func:`status`).

Daemonizing: our own double fork rather than zdaemon.  zdaemon's ``start``
returns as soon as its supervisor process has forked the server, before
storages open or the socket listens, so it cannot report "Data.fs is locked"
or "address in use" to the operator, and it adds a supervisor process and a
control socket.  ``start`` here forks twice (so the daemon has no parent to
wait for it, and is no session leader that a terminal could be attached
to), the grandchild ``exec``s a fresh interpreter running ``fg`` (so no
state of the forking process leaks in), stdin is /dev/null and
stdout/stderr go to the log file, and a pipe carries back either "listening
on ADDRESS" or the error that stopped it.  Crash restarts belong to the
service manager: run ``zeoserver fg`` under systemd, supervisord or a
container runtime for those.

The start-up report: the daemon's command line ends in ``--ready-fd FD``,
the writing end of that pipe, and the daemon writes one line to it
(:class:`ReportPipe`)::

    READY <pid> <where>          it serves, at <where> (an address, a URL)
    ERROR <status> <message>     it could not start and exits with <status>

End of file without a line means the process exited without saying why
(its log does); no line before the timeout, that it is still starting.

The pid file (:mod:`~zodbserver.pidfile`) is locked for as long as the
daemon runs: that lock, not the pid's mere existence, is what ``status``
and ``stop`` trust, so a stale file left by ``kill -9`` is recognised.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .exit_codes import EXIT_FAILURE, EXIT_OK, STATUS_NOT_RUNNING, STATUS_STALE
from .pidfile import probe, process_alive

#: Lines of the log that a failed start shows.
LOG_TAIL_LINES = 20


# -- the daemon's side ---------------------------------------------------------


class ReportPipe:
    """The daemon's end of the start-up report: says once how starting went.

    Without a file descriptor (``fg`` run by hand) it says nothing.
    """

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def ready(self, where: str) -> None:
        self._send(f"READY {os.getpid()} {where}")

    def failed(self, message: str, status: int = EXIT_FAILURE) -> None:
        self._send(f"ERROR {status} {message}")

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


# -- the starting side ---------------------------------------------------------


@dataclass(frozen=True)
class StartupReport:
    """What a starting daemon said: ready or an error; or it exited without
    a word, or said nothing before the timeout."""

    kind: Literal["ready", "error", "exited", "timeout"]
    #: ``ready``: where it serves; ``error``: why it could not start.
    detail: str = ""
    pid: int | None = None
    #: ``error``: the status the daemon exits with.
    status: int = EXIT_FAILURE


def launch(
    argv: Sequence[str],
    *,
    log_file: str,
    timeout: float,
    environment: Mapping[str, str] | None = None,
) -> tuple[StartupReport, int]:
    """Start ``argv --ready-fd FD`` as a daemon; its report and log offset.

    The daemon's output is appended to ``log_file``; the offset is where it
    starts, for :func:`print_log_since`.  Raises ``OSError`` if the log
    cannot be opened.
    """
    output = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    log_offset = os.fstat(output).st_size
    read_end, write_end = os.pipe()
    try:
        command = [*argv, "--ready-fd", str(write_end)]
        _spawn(command, write_end, output, environment)
    finally:
        os.close(write_end)
        os.close(output)
    with os.fdopen(read_end, "rb") as pipe:
        line, ended = _read_line(pipe.fileno(), timeout)
    if not line:
        return StartupReport("exited" if ended else "timeout"), log_offset
    return _parse_report(line), log_offset


def _spawn(
    argv: list[str],
    ready_fd: int,
    output: int,
    environment: Mapping[str, str] | None,
) -> None:
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
        if environment is None:
            os.execv(argv[0], argv)
        else:
            os.execve(argv[0], argv, environment)
    finally:
        os._exit(127)


def _read_line(fd: int, timeout: float) -> tuple[str, bool]:
    """The first line the daemon sends (or ""), and whether the pipe ended."""
    deadline = time.monotonic() + timeout
    data = b""
    ended = False
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            ended = True
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode("utf-8", "replace"), ended


def _parse_report(line: str) -> StartupReport:
    kind, _, rest = line.partition(" ")
    if kind == "READY":
        pid, _, where = rest.partition(" ")
        return StartupReport("ready", where, pid=int(pid) if pid.isdigit() else None)
    if kind == "ERROR":
        status, _, message = rest.partition(" ")
        if status.isdigit():
            return StartupReport("error", message, status=int(status))
        return StartupReport("error", rest)
    return StartupReport("error", line)


def print_log_since(log_file: str, offset: int, limit: int = LOG_TAIL_LINES) -> None:
    """Show on stderr the last lines written to ``log_file`` after ``offset``."""
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


# -- stop and status -----------------------------------------------------------


def stop(program: str, pid_file: str, timeout: float) -> int:
    """SIGTERM the process holding ``pid_file``, and wait until it is gone."""
    pid = _signal(program, pid_file, signal.SIGTERM)
    if pid is None:
        return EXIT_FAILURE
    if not wait_for_exit(pid, pid_file, timeout):
        print(
            f"{program} (pid {pid}) did not stop within {timeout:g} seconds; "
            "it may still be finishing a transaction, or send it SIGKILL",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    print(f"{program} stopped (pid {pid})")
    return EXIT_OK


def reload(program: str, pid_file: str) -> int:
    """SIGUSR1 the process holding ``pid_file``: it reloads its TLS
    certificates (and keeps serving; its log says how that went)."""
    pid = _signal(program, pid_file, signal.SIGUSR1)
    if pid is None:
        return EXIT_FAILURE
    print(f"{program} asked to reload (pid {pid}); see its log")
    return EXIT_OK


def _signal(program: str, pid_file: str, signum: int) -> int | None:
    """Send ``signum`` to the process holding ``pid_file``: its pid, or
    None (said on stderr) when it does not run."""
    state, pid = probe(pid_file)
    if state != "running" or pid is None:
        print(f"{program} is not running ({pid_file})", file=sys.stderr)
        return None
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        print(f"{program} is not running (pid {pid} is gone)", file=sys.stderr)
        return None
    return pid


def wait_for_exit(pid: int, pid_file: str, timeout: float) -> bool:
    """True once ``pid`` has exited and unlocked ``pid_file``."""
    deadline = time.monotonic() + timeout
    exited = _wait_for_pidfd(pid, timeout)
    if exited is False:
        return False
    # The process unlocks its pid file as it exits (or as the kernel closes
    # its files); wait for that too, so that a following start succeeds.
    # Without a pidfd, ask whether the process still exists (an exited one
    # that nobody reaps would still exist: the pidfd knows better).
    while probe(pid_file)[0] == "running" or (exited is None and process_alive(pid)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _wait_for_pidfd(pid: int, timeout: float) -> bool | None:
    """Whether ``pid`` exits within ``timeout``; None if pidfds are missing."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        return None
    # Readable once the process has exited: no polling.
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(max(0.0, timeout) * 1000))
    finally:
        os.close(pidfd)


def status(program: str, pid_file: str) -> int:
    """Print whether the process holding ``pid_file`` runs; LSB's status."""
    state, pid = probe(pid_file)
    if state == "running":
        print(f"{program} is running (pid {pid})")
        return EXIT_OK
    if state == "stale":
        print(
            f"{program} is not running, but its pid file {pid_file} "
            f"remains (pid {pid}): the process died without cleaning up"
        )
        return STATUS_STALE
    print(f"{program} is not running")
    return STATUS_NOT_RUNNING
