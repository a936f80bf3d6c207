"""The storage thread: calls run in order, off the loop, outcomes come back."""

from __future__ import annotations

import asyncio
import threading

import pytest

from zodbserver.server.storage_thread import StorageThread


def test_calls_run_in_one_other_thread_in_order() -> None:
    async def scenario() -> None:
        worker = StorageThread("storage test")
        loop = asyncio.get_running_loop()
        seen: list[tuple[int, str]] = []

        def call(index: int) -> int:
            seen.append((index, threading.current_thread().name))
            return index * 2

        try:
            futures = [worker.submit(loop, call, (index,)) for index in range(20)]
            assert await asyncio.gather(*futures) == [i * 2 for i in range(20)]
        finally:
            worker.shutdown()
        assert [index for index, _ in seen] == list(range(20))
        assert {name for _, name in seen} == {"storage test"}

    asyncio.run(scenario())


def test_an_exception_reaches_the_awaiting_side() -> None:
    async def scenario() -> None:
        worker = StorageThread("storage test")
        loop = asyncio.get_running_loop()

        def fail() -> None:
            raise KeyError("boom")

        def stop() -> None:
            raise StopIteration

        try:
            with pytest.raises(KeyError, match="boom"):
                await worker.submit(loop, fail, ())
            with pytest.raises(RuntimeError, match="StopIteration"):
                await worker.submit(loop, stop, ())
            # The thread survives its callers' errors.
            assert await worker.submit(loop, len, ("abc",)) == 3
        finally:
            worker.shutdown()

    asyncio.run(scenario())


def test_shutdown_runs_what_is_queued_and_a_cancelled_caller_is_ignored() -> None:
    async def scenario() -> None:
        worker = StorageThread("storage test")
        loop = asyncio.get_running_loop()
        release = threading.Event()
        ran: list[str] = []
        first = worker.submit(loop, release.wait, ())
        second = worker.submit(loop, ran.append, ("queued",))
        first.cancel()
        release.set()
        await asyncio.to_thread(worker.shutdown)
        assert ran == ["queued"]
        await asyncio.sleep(0)  # the completion callbacks run harmlessly
        assert first.cancelled()
        assert second.done()

    asyncio.run(scenario())


def test_a_thread_is_started_only_when_needed() -> None:
    worker = StorageThread("storage test")
    before = threading.active_count()
    worker.shutdown()  # nothing to stop
    assert threading.active_count() == before
