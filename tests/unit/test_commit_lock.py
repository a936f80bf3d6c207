"""The commit lock: first come, first served, with a hold timeout."""

from __future__ import annotations

import asyncio

import pytest

from zodbserver.server.commit import CommitLock


class Holder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.timed_out = asyncio.Event()

    def on_transaction_timeout(self) -> None:
        self.timed_out.set()


def run(coroutine: object) -> None:
    asyncio.run(coroutine)  # type: ignore[arg-type]


def test_waiters_are_granted_in_arrival_order() -> None:
    async def scenario() -> list[str]:
        lock = CommitLock()
        first, second, third = Holder("a"), Holder("b"), Holder("c")
        granted: list[str] = []
        await lock.acquire(first)

        async def wait(holder: Holder) -> None:
            await lock.acquire(holder)
            granted.append(holder.name)

        tasks = [asyncio.ensure_future(wait(h)) for h in (second, third)]
        await asyncio.sleep(0)
        assert lock.waiting == 2
        assert lock.holder is first
        lock.release(first)
        await asyncio.sleep(0)
        assert lock.holder is second
        lock.release(second)
        await asyncio.gather(*tasks)
        lock.release(third)
        assert lock.holder is None
        return granted

    assert asyncio.run(scenario()) == ["b", "c"]


def test_releasing_a_waiter_cancels_its_wait() -> None:
    async def scenario() -> None:
        lock = CommitLock()
        holder, waiter = Holder("a"), Holder("b")
        await lock.acquire(holder)
        task = asyncio.ensure_future(lock.acquire(waiter))
        await asyncio.sleep(0)
        assert lock.is_waiting(waiter)
        lock.release(waiter)  # e.g. its connection was lost
        with pytest.raises(asyncio.CancelledError):
            await task
        assert lock.waiting == 0
        lock.release(holder)
        assert lock.holder is None

    asyncio.run(scenario())


def test_a_holder_past_the_timeout_is_told() -> None:
    async def scenario() -> None:
        lock = CommitLock(timeout=0.01)
        holder = Holder("a")
        await lock.acquire(holder)
        assert lock.locked_since is not None
        await asyncio.wait_for(holder.timed_out.wait(), 5)

    asyncio.run(scenario())


def test_release_in_time_cancels_the_timeout() -> None:
    async def scenario() -> None:
        lock = CommitLock(timeout=0.05)
        first, second = Holder("a"), Holder("b")
        await lock.acquire(first)
        lock.release(first)
        await lock.acquire(second)
        await asyncio.wait_for(second.timed_out.wait(), 5)
        assert not first.timed_out.is_set()

    asyncio.run(scenario())
