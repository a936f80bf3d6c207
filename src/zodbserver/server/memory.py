"""The server process's use of the C allocator (glibc's malloc).

Two things, both for a server that runs for months: ``tune_malloc`` fixes
the allocator's thresholds once at start, and ``TrimTimer`` hands free heap
pages back to the system once the server goes idle after some work, so
that the memory a burst (a big commit, a blob upload, many connections)
needed does not stay resident once the burst is over.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _ctypes import CFuncPtr

#: glibc's ``mallopt`` parameters (malloc.h) and what the server sets them to.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MALLOC_SETTINGS = (
    (_M_MMAP_THRESHOLD, 512 * 1024),
    (_M_TRIM_THRESHOLD, 1024 * 1024),
    (_M_ARENA_MAX, 1),
)

#: Seconds between two looks at whether the server has gone idle.
TRIM_INTERVAL = 2.0
#: Process CPU seconds per interval below which the server counts as idle.
IDLE_CPU = 0.01


@functools.cache
def _libc_function(name: str) -> CFuncPtr | None:
    """``name`` from the C library, or None where it has no such function."""
    try:
        function: CFuncPtr = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    return function


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
    """Returns free heap pages to the system when the server goes idle.

    Every ``interval`` seconds it reads the process's CPU time: an interval
    that used less than ``IDLE_CPU`` after some work since the last trim
    calls ``trim``, once.  Trimming walks the heap's free chunks under the
    allocator's lock -- tens of milliseconds for a fragmented heap of a
    gigabyte -- so it waits for a quiet moment instead of stalling a busy
    server, and an idle server is not woken for nothing.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float = TRIM_INTERVAL,
        trim: Callable[[], object] = return_free_memory,
        cpu_time: Callable[[], float] = time.process_time,
    ) -> None:
        self._loop = loop
        self._interval = interval
        self._trim = trim
        self._cpu_time = cpu_time
        self._checked = self._trimmed = cpu_time()
        self._handle = loop.call_later(interval, self._run)

    def _run(self) -> None:
        self.tick()
        self._handle = self._loop.call_later(self._interval, self._run)

    def tick(self) -> bool:
        """Trim if the last interval was idle after work; whether it did."""
        now = self._cpu_time()
        idle = now - self._checked < IDLE_CPU
        worked = now - self._trimmed >= IDLE_CPU
        self._checked = now
        if not (idle and worked):
            return False
        self._trim()
        self._checked = self._trimmed = self._cpu_time()
        return True

    def cancel(self) -> None:
        self._handle.cancel()
