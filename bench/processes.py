"""Child processes: the servers, the workers, the scraper, always reaped.

Every child is started through ``Children``, which kills whatever is still
running when the benchmark ends, fails or is interrupted.  Reading a child's
output goes through ``Child.expect``, which gives up after a timeout rather
than blocking on a child that hangs.  Servers listen on 127.0.0.1 on a port
picked free just before they start, so that both get the same ``zeo.conf``
shape and are reached the same way.  ``Scraper`` drives a
``bench.scraper`` child that polls a server's monitor.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: The directory holding the ``bench`` package: children run from here.
ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
#: Seconds ``Scraper.sync`` waits: a scrape in flight may take two requests'
#: timeouts (``bench.scraper.REQUEST_TIMEOUT``).
SYNC_TIMEOUT = 30.0


class ChildError(RuntimeError):
    """A child process died, hung or said something unexpected."""


class Child:
    """One child process with line-oriented stdout and a stdin pipe."""

    def __init__(
        self,
        argv: list[str],
        name: str,
        log_path: str | None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        stderr: Any = subprocess.DEVNULL
        if log_path is not None:
            stderr = open(log_path, "ab")  # noqa: SIM115 -- closed in reap()
        self._stderr = stderr
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def expect(self, prefix: str, timeout: float) -> str:
        """The rest of the next stdout line, which must start with ``prefix``."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ChildError(f"{self.name}: no {prefix!r} in {timeout}s")
                if not selector.select(remaining):
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise ChildError(f"{self.name} exited: {self.log_tail()}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        text = line.decode()
        if not text.startswith(prefix):
            raise ChildError(f"{self.name}: expected {prefix!r}, got {text[:200]!r}")
        return text[len(prefix) :].strip()

    def log_tail(self, lines: int = 15) -> str:
        if self.log_path is None or not os.path.exists(self.log_path):
            return "(no log)"
        with open(self.log_path, errors="replace") as file:
            return "".join(file.readlines()[-lines:])

    def reap(self, timeout: float = STOP_TIMEOUT) -> None:
        """Terminate (then kill) the child and close its pipes."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if self._stderr is not subprocess.DEVNULL:
            self._stderr.close()


class Children:
    """Owns every child process started; ``close`` reaps those left."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self._children: list[Child] = []

    def start(
        self,
        argv: list[str],
        name: str,
        *,
        log: bool = True,
        env: dict[str, str] | None = None,
    ) -> Child:
        """Start ``argv``; ``env``: its environment, if not this process's."""
        log_path = os.path.join(self.log_dir, f"{name}.log") if log else None
        child = Child(argv, name, log_path, env)
        self._children.append(child)
        return child

    def reap(self, child: Child) -> None:
        child.reap()
        with contextlib.suppress(ValueError):
            self._children.remove(child)

    def close(self) -> None:
        children, self._children = self._children, []
        for child in children:
            if child.process.poll() is None:
                child.process.terminate()
        for child in children:
            with contextlib.suppress(Exception):
                child.reap()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def zeo_conf(
    path: str,
    blob_dir: str,
    port: int,
    msgpack: bool | None,
    tls: str | None = None,
    monitor_port: int | None = None,
    storage_section: str | None = None,
) -> str:
    """``tls``: a directory of ``clients.make_certificates`` files: both
    servers then take the same ``<ssl>`` section.  ``monitor_port``: our
    server's ``monitor-address`` (ZEO 6 has no monitor).
    ``storage_section`` replaces the FileStorage at ``path`` (a
    ``<relstorage>`` section with its ``%import`` line, say)."""
    zeo = [f"  address 127.0.0.1:{port}"]
    if monitor_port is not None:
        zeo.append(f"  monitor-address 127.0.0.1:{monitor_port}")
    if msgpack is not None:
        zeo.append(f"  msgpack {str(msgpack).lower()}")
    if tls:
        zeo += [
            "  <ssl>",
            f"    certificate {tls}/server.pem",
            f"    key {tls}/server.key",
            f"    authenticate {tls}/ca.pem",
            "  </ssl>",
        ]
    lines = ["<zeo>", *zeo, "</zeo>"]
    if storage_section is not None:
        return "\n".join(lines) + "\n" + storage_section
    lines += ["<filestorage 1>", f"  path {path}"]
    lines += [f"  blob-dir {blob_dir}", "</filestorage>"]
    return "\n".join(lines) + "\n"


def start_server(
    children: Children,
    kind: str,
    path: str,
    blob_dir: str,
    work_dir: str,
    msgpack: bool | None = None,
    tls: str | None = None,
    monitor_port: int | None = None,
    name: str | None = None,
    timeout: float = START_TIMEOUT,
    env: dict[str, str] | None = None,
    storage_section: str | None = None,
) -> tuple[Child, tuple[str, int]]:
    """Start server ``kind`` (``"zeo"`` or ``"ours"``) on the given storage.

    ``msgpack``: the encoding to announce; None leaves each server's default
    (ZEO: pickle, ``Z5``; ours: msgpack, ``M5``).  ``tls``: serve over TLS
    with the certificates in that directory (``zeo_conf``).
    ``monitor_port``: our server's monitor listens there.  ``name`` (default
    ``KIND-server``) names its configuration, var directory and log.
    ``timeout``: how long it may take to listen.  ``env``: the server's
    environment, if not this process's.  ``storage_section``: the storage
    instead of a FileStorage at ``path`` (``zeo_conf``).
    """
    port = free_port()
    name = name or f"{kind}-server"
    conf = os.path.join(work_dir, f"{name}.conf")
    with open(conf, "w") as file:
        file.write(
            zeo_conf(path, blob_dir, port, msgpack, tls, monitor_port, storage_section)
        )
    if kind == "zeo":
        argv = [sys.executable, "-m", "ZEO.runzeo", "-C", conf]
    else:
        var = os.path.join(work_dir, f"{name}-var")
        argv = [sys.executable, "-m", "zodbserver.cli", "-C", conf, "--var", var, "fg"]
    child = children.start(argv, name, env=env)
    address = ("127.0.0.1", port)
    wait_listening(child, address, timeout)
    return child, address


def wait_listening(child: Child, address: tuple[str, int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if child.process.poll() is not None:
            raise ChildError(f"{child.name} exited: {child.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(address, 1.0):
            return
        if time.monotonic() > deadline:
            raise ChildError(f"{child.name} not listening after {timeout}s")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """The CPU time process ``pid``'s threads have run, in seconds: the sum
    of ``/proc/PID/task/*/schedstat`` (nanoseconds, unlike the clock ticks
    of ``/proc/PID/stat``); a thread that has ended no longer counts."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with (
            contextlib.suppress(FileNotFoundError, ProcessLookupError),
            open(f"/proc/{pid}/task/{task}/schedstat") as file,
        ):
            total += int(file.read().split()[0])
    return total / 1e9


def resident_kib(pid: int) -> int:
    """VmRSS of process ``pid`` in KiB, from ``/proc/PID/status``."""
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ChildError(f"no VmRSS for pid {pid}")


class Scraper:
    """A ``bench.scraper`` child polling one monitor every ``interval``
    between ``begin`` and ``end``.

    ``end`` and ``sync`` return the scrapes reported since the last call
    (each a dict, ``bench.scraper`` says which keys) and keep them all in
    ``scrapes``.
    """

    def __init__(self, children: Children, base_url: str, interval: float) -> None:
        self.base_url = base_url
        self.interval = interval
        self.scrapes: list[dict[str, Any]] = []
        argv = [sys.executable, "-m", "bench.scraper", base_url, str(interval)]
        self._child = children.start(argv, "scraper")
        self._child.expect("READY", START_TIMEOUT)

    def begin(self) -> None:
        """Scrape now and every interval until ``end``; return once the
        first scrape has begun."""
        self._child.send("BEGIN")
        self._collect("BEGUN")

    def end(self) -> list[dict[str, Any]]:
        """Stop scraping; the scrapes since the last call."""
        self._child.send("END")
        return self._collect("ENDED")

    def sync(self) -> list[dict[str, Any]]:
        self._child.send("SYNC")
        return self._collect("SYNCED")

    def _collect(self, answer: str) -> list[dict[str, Any]]:
        new = []
        while (line := self._child.expect("", SYNC_TIMEOUT)) != answer:
            kind, _, record = line.partition(" ")
            if kind != "SCRAPE":
                raise ChildError(f"scraper: unexpected line {line[:200]!r}")
            new.append(json.loads(record))
        self.scrapes.extend(new)
        return new
