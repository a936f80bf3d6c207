"""Process-level tuning done by the server's ``run``: the allocator."""

from __future__ import annotations

import asyncio
import ctypes.util
import subprocess
import sys
import textwrap

import pytest

from zodbserver.server.memory import TrimTimer, tune_malloc

#: The suite runs on Linux with glibc (README), whose allocator the server
#: tunes with mallopt and malloc_trim.
GLIBC = sys.platform.startswith("linux") and ctypes.util.find_library("c") is not None


def test_glibc_takes_the_malloc_settings() -> None:
    assert GLIBC, "mallopt and malloc_trim are glibc's"
    assert tune_malloc() is True


def test_free_heap_pages_go_back_to_the_system() -> None:
    """With the server's settings, freed small blocks stay resident (below
    the trim threshold, or stuck under a live block); returning free memory
    releases them."""
    assert GLIBC, "mallopt and malloc_trim are glibc's"
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


class FakeCpu:
    """A process CPU clock the test moves by hand."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


def test_memory_is_trimmed_once_the_server_is_idle_after_work() -> None:
    cpu = FakeCpu()
    trims: list[float] = []

    async def scenario() -> list[bool]:
        loop = asyncio.get_running_loop()
        timer = TrimTimer(loop, 3600, lambda: trims.append(cpu.seconds), cpu)
        ticks = []
        for used in (0.0, 0.5, 0.3, 0.001, 0.0, 0.2, 0.0):
            cpu.seconds += used
            ticks.append(timer.tick())
        timer.cancel()
        return ticks

    ticks = asyncio.run(scenario())
    # idle from the start: nothing to give back; busy, busy: not now;
    # quiet: trim; quiet again: done already; busy; quiet: trim.
    assert ticks == [False, False, False, True, False, False, True]
    assert trims == [pytest.approx(0.801), pytest.approx(1.001)]


def test_the_trim_timer_looks_every_interval_until_cancelled() -> None:
    looks: list[float] = []

    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        fourth = asyncio.Event()

        def cpu_time() -> float:  # read once at start, then once per look
            looks.append(loop.time())
            if len(looks) == 4:
                fourth.set()
            return 0.0

        timer = TrimTimer(loop, 0.01, lambda: None, cpu_time)
        await asyncio.wait_for(fourth.wait(), 5)
        timer.cancel()
        counted = len(looks)
        await asyncio.sleep(0.05)
        return counted

    counted = asyncio.run(scenario())
    assert len(looks) == counted >= 4
    assert looks == sorted(looks)
