"""``zeoserver logtail``: show the end of a log file and follow it.

Like ``tail -f``, and across logrotate: when the file at the path is
replaced by a new one, the new one is followed from its start.
"""

from __future__ import annotations

import os
import sys
import time
from typing import BinaryIO

#: Seconds between looks at a log that has nothing new.
POLL_INTERVAL = 0.5


def logtail(path: str, lines: int, *, follow: bool) -> None:
    """Print the last ``lines`` lines of ``path``, then follow it if asked.

    Following ends with Ctrl-C (KeyboardInterrupt, caught here).  Raises
    ``OSError`` when the file cannot be opened.
    """
    file: BinaryIO = open(path, "rb")  # noqa: SIM115 - followed
    try:
        for line in _last_lines(file, lines):
            sys.stdout.write(line)
        sys.stdout.flush()
        if follow:
            file = _follow(file, path)
    except KeyboardInterrupt:
        pass
    finally:
        file.close()


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
        time.sleep(POLL_INTERVAL)
