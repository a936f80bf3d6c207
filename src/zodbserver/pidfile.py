"""The pid file of a server or client instance, locked while it runs.

The lock (``flock``), not the pid's mere existence, is what ``status`` and
``stop`` trust, so a stale file left by ``kill -9`` is recognised.  Also
the one liveness check, :func:`process_alive`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from .errors import ZodbServerError


class AlreadyRunningError(ZodbServerError):
    def __init__(self, pid: int | None, pid_file: str) -> None:
        self.pid = pid
        shown = f"pid {pid}" if pid else "pid unknown"
        super().__init__(f"zeoserver is already running ({shown}, {pid_file})")


class PidFile:
    """A pid file that is locked while its process runs."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise AlreadyRunningError(read_pid(self.path), self.path) from None
            # The previous owner unlinks the file before it unlocks; if we
            # locked an unlinked file, try again with the new one.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self, *, remove: bool = True) -> None:
        if self._fd is None:
            return
        if remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None


def read_pid(path: str) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return int(file.read().strip())
    except (OSError, ValueError):
        return None


def probe(path: str) -> tuple[str, int | None]:
    """``("running" | "stale" | "stopped", pid)`` from the pid file's lock."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return "stopped", None
    try:
        pid = read_pid(path)
        # A dead pid needs no lock probe, which could race a starting server.
        if pid is not None and not process_alive(pid):
            return "stale", pid
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return "running", pid
        fcntl.flock(fd, fcntl.LOCK_UN)
        return "stale", pid
    finally:
        os.close(fd)


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (of any user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    return True
