"""The repository's commands (``python -m bench``, ``python -m stress.soak``,
...) run as the README shows them: a child process of this interpreter in
the repository's root, its exit status and output checked."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: How long a command has to stop after SIGTERM before its process group
#: is SIGKILLed.
STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


def run_module(
    module: str,
    arguments: Sequence[str],
    timeout: float,
    *,
    expect: int | None = 0,
) -> Completed:
    """``python -m module arguments`` in the repository's root; fails the
    test if it takes over ``timeout`` seconds or (unless ``expect`` is
    None) exits other than ``expect``.

    The command runs in a process group of its own: past the timeout it
    gets SIGTERM (so that it may stop its servers and workers), and
    whatever of the group is left is SIGKILLed.
    """
    child = subprocess.Popen(
        [sys.executable, "-m", module, *arguments],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.terminate()
        try:
            _, stderr = child.communicate(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            _, stderr = child.communicate()
        pytest.fail(f"{module} took over {timeout}s: {stderr[-3000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # servers it left behind
    if expect is not None:
        assert child.returncode == expect, (module, stderr[-3000:])
    return Completed(child.returncode, stdout, stderr)


def markdown_rows(text: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the Markdown table in ``text`` whose header starts with
    the cell ``first_header``, each a mapping of header to cell."""
    lines = text.splitlines()
    starts = [n for n, line in enumerate(lines) if _cells(line)[:1] == [first_header]]
    assert starts, f"no table headed {first_header!r} in {text[:2000]}"
    headers = _cells(lines[starts[0]])
    rows = []
    for line in lines[starts[0] + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(headers, _cells(line), strict=True)))
    return rows


def _cells(line: str) -> list[str]:
    if not line.startswith("|"):
        return []
    return [cell.strip() for cell in line.strip().strip("|").split("|")]
