"""The server process's use of the C allocator (glibc's malloc).

Two things, both for a server that runs for months: ``tune_malloc`` fixes
the allocator's thresholds once at start, and ``TrimTimer`` hands free heap
pages back to the system every few seconds, so that the memory a burst of
work needed (a big commit, a blob upload, many connections) does not stay
resident once the burst is over.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
from collections.abc import Callable
from typing import Any

#: glibc's ``mallopt`` parameters (malloc.h) and what the server sets them to.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MALLOC_SETTINGS = (
    (_M_MMAP_THRESHOLD, 512 * 1024),
    (_M_TRIM_THRESHOLD, 1024 * 1024),
    (_M_ARENA_MAX, 1),
)

#: Seconds between two returns of free heap pages to the system.
TRIM_INTERVAL = 2.0


@functools.cache
def _libc_function(name: str) -> Any:
    """``name`` from the C library, or None where it has no such function."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def tune_malloc() -> bool:
    """Let memory go back after big transfers without paying for it in speed.

    glibc raises its mmap threshold whenever a mapped block is freed, up to
    32 MiB; blocks of that size then come from the heap, whose free space
    mostly stays resident, so one large record would keep megabytes.  Fixing the
    threshold turns that off.  At 512 KiB it sits above the event loop's
    256 KiB reads, which therefore reuse heap memory instead of mapping
    (and faulting in) fresh pages for every read of a big upload; the
    heap's trim threshold, which would otherwise stay at its 128 KiB
    default, is 1 MiB for the same reason; and one arena serves every
    thread, so that bound holds once rather than per thread.  Returns
    whether the settings were taken (False where the C library has no
    ``mallopt``).
    """
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    taken = [bool(mallopt(option, value)) for option, value in MALLOC_SETTINGS]
    return all(taken)


def return_free_memory() -> bool:
    """Give the heap's free pages back to the system, wherever they lie in
    the heap (the trim threshold only ever releases its top).  Returns
    whether the C library could do it."""
    malloc_trim = _libc_function("malloc_trim")
    if malloc_trim is None:
        return False
    malloc_trim.argtypes = (ctypes.c_size_t,)
    malloc_trim(0)
    return True


class TrimTimer:
    """Calls ``trim`` every ``interval`` seconds on ``loop`` until cancelled.

    A call that has nothing to release costs a few microseconds; after a
    burst it may take a few hundred, on the loop, once.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float = TRIM_INTERVAL,
        trim: Callable[[], object] = return_free_memory,
    ) -> None:
        self._loop = loop
        self._interval = interval
        self._trim = trim
        self._handle = loop.call_later(interval, self._run)

    def _run(self) -> None:
        self._trim()
        self._handle = self._loop.call_later(self._interval, self._run)

    def cancel(self) -> None:
        self._handle.cancel()
