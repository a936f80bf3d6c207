"""Process-level tuning done by the server's ``run``: the allocator."""

from __future__ import annotations

import asyncio
import ctypes.util
import subprocess
import sys
import textwrap

import pytest

from zodbserver.server.memory import TrimTimer, tune_malloc

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None,
    reason="mallopt and malloc_trim are glibc's",
)


@glibc_only
def test_glibc_takes_the_malloc_settings() -> None:
    assert tune_malloc() is True


@glibc_only
def test_free_heap_pages_go_back_to_the_system() -> None:
    """With the server's settings, freed small blocks stay resident (below
    the trim threshold, or stuck under a live block); returning free memory
    releases them."""
    script = textwrap.dedent(
        """
        from zodbserver.server.memory import return_free_memory, tune_malloc

        def resident_kib():
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])

        assert tune_malloc()
        blocks = [bytes(2000 + index % 5) for index in range(20000)]
        pinned = bytes(3000)  # a live block above the freed ones
        del blocks
        before = resident_kib()
        assert return_free_memory()
        print(before - resident_kib())
        """
    )
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    released_kib = int(output.stdout)
    assert released_kib > 20000  # of the ~40 MB freed


def test_the_trim_timer_runs_until_cancelled() -> None:
    calls: list[float] = []

    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        third = asyncio.Event()

        def trim() -> None:
            calls.append(loop.time())
            if len(calls) == 3:
                third.set()

        timer = TrimTimer(loop, 0.01, trim)
        await asyncio.wait_for(third.wait(), 5)
        timer.cancel()
        counted = len(calls)
        await asyncio.sleep(0.05)
        return counted

    counted = asyncio.run(scenario())
    assert len(calls) == counted >= 3
    assert calls == sorted(calls)
