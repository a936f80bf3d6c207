"""Database servers as child processes, ours or ZEO 6's, on a fixed port.

A ``ServerProcess`` keeps its address across restarts, so clients that were
connected before a ``kill`` (SIGKILL: no shutdown code runs) find the server
again when it is started anew on the same files, exactly as they would after
a crash and a restart by a service manager.  The stress commands in
``stress/`` run their servers with it too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from ZEO.ClientStorage import ClientStorage
from ZODB.Connection import TransactionMetaData
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle
from ZODB.utils import z64

from support.waiting import wait_until

KINDS = ("ours", "zeo")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """Server ``kind`` ("ours" or "zeo") over ``directory/Data.fs``."""

    def __init__(
        self,
        kind: str,
        directory: Path,
        *,
        blobs: bool = False,
        zeo_lines: tuple[str, ...] = (),
        environment: Mapping[str, str] | None = None,
        storage_section: str | None = None,
    ) -> None:
        """``zeo_lines`` go into the ``<zeo>`` section (``<ssl>``, say);
        ``environment`` holds variables the child gets on top of ours (a
        ``PYTHONPATH`` for another version of the server, say);
        ``storage_section`` replaces the FileStorage (a ``<relstorage>``
        section, with its ``%import`` line)."""
        assert kind in KINDS, kind
        self.zeo_lines = zeo_lines
        self.storage_section = storage_section
        self.environment = dict(environment or {})
        self.kind = kind
        self.directory = directory
        self.path = directory / "Data.fs"
        self.blob_dir = directory / "blobs" if blobs else None
        self.log_path = directory / f"{kind}-server.log"
        self.address = ("127.0.0.1", free_port())
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def _argv(self) -> list[str]:
        blob_line = f"  blob-dir {self.blob_dir}\n" if self.blob_dir else ""
        zeo = "".join(f"  {line}\n" for line in self.zeo_lines)
        conf = self.directory / f"{self.kind}-server.conf"
        storage = self.storage_section or (
            f"<filestorage 1>\n  path {self.path}\n{blob_line}</filestorage>\n"
        )
        conf.write_text(
            f"<zeo>\n  address {self.address[0]}:{self.address[1]}\n{zeo}</zeo>\n"
            + storage
        )
        if self.kind == "zeo":
            return [sys.executable, "-m", "ZEO.runzeo", "-C", str(conf)]
        command = [sys.executable, "-m", "zodbserver.cli"]
        return [*command, "-C", str(conf), "--var", str(self.directory / "var"), "fg"]

    def start(self) -> tuple[str, int]:
        """Start the server and return once it accepts connections."""
        assert self.process is None, "already running"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, **self.environment},
            )
        self.starts += 1
        wait_until(
            self._listening, f"{self.kind} server to listen", timeout=START_TIMEOUT
        )
        return self.address

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the {self.kind} server exited: {self.log()}")
        try:
            with socket.create_connection(self.address, timeout=1.0):
                return True
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def proc_status(self, field: str) -> int:
        """The number on the ``field:`` line of ``/proc/PID/status``: kB for
        ``VmRSS`` and ``VmHWM``, a count for ``Threads``.  ``LookupError``
        if there is none (a zombie has no ``Vm`` lines)."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
        raise LookupError(f"no {field} in /proc/{self.pid}/status")

    def open_fds(self) -> int:
        """How many file descriptors the server has open."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def kill(self) -> None:
        """SIGKILL the server and reap it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT)
        self.process = None

    def stop(self) -> int | None:
        """Stop gracefully (SIGTERM, then SIGKILL); the exit status."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(STOP_TIMEOUT)

    def log(self) -> str:
        with contextlib.suppress(OSError), open(self.log_path, errors="replace") as f:
            return f.read()[-4000:]
        return ""

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def vote_then_kill(server: ServerProcess) -> None:
    """Vote a transaction of one new object, then SIGKILL the server before
    its finish: the transaction is in Data.fs, voted and never finished."""
    storage = ClientStorage(server.address, wait_timeout=STOP_TIMEOUT)
    try:
        size_before = os.path.getsize(server.path)
        metadata = TransactionMetaData()
        storage.tpc_begin(metadata)
        storage.store(storage.new_oid(), z64, zodb_pickle(MinPO("voted")), "", metadata)
        storage.tpc_vote(metadata)
        assert os.path.getsize(server.path) > size_before  # written, status "c"
        server.kill()
        storage.tpc_abort(metadata, timeout=0.1)
    finally:
        storage.close()


def last_transaction(address: tuple[str, int]) -> bytes:
    """What the server at ``address`` reports as its last transaction."""
    storage = ClientStorage(address, wait_timeout=STOP_TIMEOUT)
    try:
        tid: bytes = storage.lastTransaction()
        return tid
    finally:
        storage.close()
