"""Figures as people read them: sizes, durations, ages and clock times.

Shared by the status page and ``zeoserver status --verbose``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any


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


def replication(status: Mapping[str, Any]) -> list[str]:
    """A storage's replication (``ReplicationControl.status``), in lines."""
    history = status["history"]
    lines = [f"epoch {history[-1][0]}" + (", read-only" if status["read_only"] else "")]
    if status.get("stale"):
        lines.append(f"left behind: {status['stale']}")
    primary = status["primary"]
    if primary is not None:
        lines.append(
            f"replica of {primary['primary']}: {primary['state']}, "
            f"{age(primary['lag_seconds'])} behind, {primary['applied']} "
            "transactions applied"
            + (f" ({primary['error']})" if primary["error"] else "")
        )
    required = status["sync_replicas"]
    if required:
        lines.append(
            f"sync-replicas {required}: {status['unconfirmed_commits']} commits "
            "acknowledged without them"
        )
    for replica in status["replicas"]:
        lines.append(
            f"replica {replica['address'] or replica['label']}: {replica['state']}, "
            f"{age(replica['lag_seconds'])} and {replica['lag_transactions']} "
            f"transactions behind (confirmed {replica['acknowledged']})"
        )
    return lines
