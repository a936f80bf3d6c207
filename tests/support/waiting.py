"""Bounded polling: wait for something another thread or process does.

``wait_until`` fails the test when the condition never holds;
``read_until`` only returns what it read last, for a caller that asserts on
that reading itself or waits at best (cleanup).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def read_until(
    read: Callable[[], T],
    done: Callable[[T], object] = bool,
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
) -> T:
    """Call ``read`` until ``done`` holds for its value or ``timeout``
    seconds pass, sleeping ``interval`` between calls; the last value read.

    ``read`` runs at least once, and once more at or after the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def wait_until(
    predicate: Callable[[], T],
    what: str,
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return that.

    Raises ``AssertionError`` naming ``what`` (say, "the invalidation") if it
    is still falsy after ``timeout`` seconds.
    """
    value = read_until(predicate, timeout=timeout, interval=interval)
    if not value:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")
    return value
