"""Fixtures for the recipe tests: free ports, real buildout runs, cleanup."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.waiting import read_until

#: The checkout holding pyproject.toml: the develop egg of every buildout.
CHECKOUT = Path(__file__).resolve().parents[2]
BUILDOUT = Path(sys.executable).with_name("buildout")
PROFILE = CHECKOUT / "profiles" / "zeo-instance.cfg"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_buildout(directory: Path, config: str) -> subprocess.CompletedProcess[str]:
    (directory / "buildout.cfg").write_text(config)
    return subprocess.run(
        [str(BUILDOUT), "-c", str(directory / "buildout.cfg")],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
    )


def buildout_header(parts: str, extends: str = "") -> str:
    lines = [
        "[buildout]",
        f"develop = {CHECKOUT}",
        f"parts = {parts}",
        "newest = false",
        "offline = true",
    ]
    if extends:
        lines.insert(1, f"extends = {extends}")
    return "\n".join(lines) + "\n"


class Pids:
    """Pid files of processes a test started, to kill whatever survives."""

    def __init__(self) -> None:
        self.pid_files: list[Path] = []

    def watch(self, path: Path) -> None:
        self.pid_files.append(path)

    def alive(self) -> list[int]:
        pids = []
        for path in self.pid_files:
            try:
                pid = int(path.read_text().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            pids.append(pid)
        return pids

    def kill_all(self) -> None:
        for pid in self.alive():
            os.kill(pid, signal.SIGKILL)
        read_until(self.alive, lambda alive: not alive, timeout=10)


@pytest.fixture
def pids() -> Iterator[Pids]:
    watched = Pids()
    try:
        yield watched
    finally:
        watched.kill_all()
