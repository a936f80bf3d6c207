"""Figures as people read them: sizes, durations, ages and clock times.

Shared by the status page and ``zeoserver status --verbose``.
"""

from __future__ import annotations

import time


def clock(epoch: float) -> str:
    """Local date and time to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def age(seconds: float) -> str:
    """A duration at a glance: 4.2 s, 3.5 min, 2.0 h, 6.1 days."""
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def since(epoch: float, now: float) -> str:
    return f"{clock(epoch)} ({age(now - epoch)} ago)"


def duration(seconds: float) -> str:
    """A short duration, in milliseconds below a second: 1.3 ms, 2.50 s."""
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def size(count: int) -> str:
    """Bytes, in binary multiples: 512 bytes, 1.5 KB, 12.0 MB."""
    value, unit = float(count), "bytes"
    for larger in ("KB", "MB", "GB", "TB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{count} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
