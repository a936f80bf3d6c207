"""Handing the commit lock to the next voter while a finish is still running.

``tpc_finish`` releases the commit lock as soon as the finish is queued for
the storage thread, so a waiting voter's replay runs right behind it in that
thread.  These tests drive two sessions directly (no sockets) against a
storage whose ``tpc_finish`` can be held and made to fail.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from ZODB.MappingStorage import MappingStorage
from ZODB.POSException import POSKeyError
from ZODB.utils import z64

from support.answers import answer
from zodbserver.server.session import Session
from zodbserver.server.settings import ServerSettings
from zodbserver.server.storage_server import StorageServer

WAIT = 10.0


class GatedStorage(MappingStorage):
    """A MappingStorage whose ``tpc_finish`` can be held, and fail once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.finishing = threading.Event()
        self.fail_next_finish = False

    def tpc_finish(self, transaction: Any, func: Any = lambda tid: None) -> Any:
        self.finishing.set()
        assert self.gate.wait(WAIT)
        if self.fail_next_finish:
            self.fail_next_finish = False
            raise OSError("no space left on device")
        return super().tpc_finish(transaction, func)


class Peer:
    def __init__(self, label: str) -> None:
        self.label = label
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    def send_async(self, method: str, args: tuple[Any, ...]) -> None:
        self.sent.append((method, args))

    async def send_blob(self, oid: bytes, serial: bytes, path: str) -> None:
        raise AssertionError("no blobs here")

    def close(self) -> None:
        pass


async def _until(condition: Any) -> None:
    """Let the loop run until ``condition()`` holds (it must, soon)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def _open() -> tuple[GatedStorage, StorageServer, Session, Session]:
    storage = GatedStorage()
    server = StorageServer({"1": storage}, ServerSettings())
    server.attach(asyncio.get_running_loop())
    first, second = Session(server, Peer("first")), Session(server, Peer("second"))
    first.register("1", False)
    second.register("1", False)
    return storage, server, first, second


def _begin(session: Session, token: int, oid: bytes, data: bytes) -> None:
    session.tpc_begin(token, b"user", b"description", {})
    session.storea(oid, z64, data, token)


async def _finish_held(
    *, fail: bool = False
) -> tuple[GatedStorage, StorageServer, Session, Session, bytes, bytes, Any]:
    """Two sessions; the first has voted and its finish is held in the storage
    (and will fail, if ``fail``).  Returns the storage, the server, both
    sessions, the oid each stores, and the pending finish."""
    storage, server, first, second = await _open()
    oid_first, oid_second = storage.new_oid(), storage.new_oid()
    _begin(first, 1, oid_first, b"first")
    assert await answer(first.vote, 1) == []
    storage.gate.clear()
    storage.fail_next_finish = fail
    finishing = asyncio.ensure_future(answer(first.tpc_finish, 1))
    await asyncio.to_thread(storage.finishing.wait, WAIT)
    return storage, server, first, second, oid_first, oid_second, finishing


def test_a_failed_finish_is_aborted_before_the_next_replay() -> None:
    async def scenario() -> None:
        held = await _finish_held(fail=True)
        storage, server, first, second, oid_first, oid_second, finishing = held
        _begin(second, 2, oid_second, b"second")
        voting = asyncio.ensure_future(answer(second.vote, 2))
        lock = server.hosted["1"].commit_lock
        await _until(lambda: lock.holder is second)
        storage.gate.set()
        with pytest.raises(OSError, match="no space"):
            await finishing
        # Without the abort inside the failed finish, the storage would still
        # be in the first transaction and the replay would wait forever.
        assert await asyncio.wait_for(voting, WAIT) == []
        tid = await answer(second.tpc_finish, 2)
        assert storage.load(oid_second) == (b"second", tid)
        with pytest.raises(POSKeyError):
            storage.load(oid_first)
        assert first.transaction is None
        assert lock.holder is None
        await asyncio.to_thread(server.close_storages)

    asyncio.run(scenario())


def test_the_next_voter_hears_of_the_commit_before_its_vote_returns() -> None:
    async def scenario() -> None:
        held = await _finish_held()
        storage, server, first, second, oid_first, oid_second, finishing = held
        _begin(second, 2, oid_second, b"second")
        heard_before_vote: list[Any] = []

        async def vote() -> Any:
            result = await answer(second.vote, 2)
            heard_before_vote.extend(second.peer.sent)  # type: ignore[attr-defined]
            return result

        voting = asyncio.ensure_future(vote())
        lock = server.hosted["1"].commit_lock
        await _until(lambda: lock.holder is second)
        storage.gate.set()
        tid = await finishing
        assert await asyncio.wait_for(voting, WAIT) == []
        assert heard_before_vote == [("invalidateTransaction", (tid, [oid_first]))]
        assert first.peer.sent == [  # type: ignore[attr-defined]
            ("info", ({"length": 1, "size": storage.getSize()},))
        ]
        assert await answer(second.tpc_finish, 2) > tid
        await asyncio.to_thread(server.close_storages)

    asyncio.run(scenario())
