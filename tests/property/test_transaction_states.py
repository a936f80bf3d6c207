"""Random interleavings of begin/store/vote/finish/abort/disconnect from two
clients of one storage: whatever the order, no step is refused by the
transaction state machine, the commit lock and the storage end free, and
the counters say no transaction is left."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from ZODB.MappingStorage import MappingStorage
from ZODB.POSException import POSError, POSKeyError
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle
from ZODB.utils import z64

from support.answers import answer, call_now
from zodbserver.server.commit import CommitLock
from zodbserver.server.session import Session
from zodbserver.server.settings import ServerSettings
from zodbserver.server.storage_server import StorageServer
from zodbserver.server.transaction_state import (
    Event,
    IllegalTransitionError,
    State,
    TransactionState,
)

ACTIONS = ("begin", "store", "vote", "finish", "abort", "disconnect", "wait")
#: Errors a client may be answered with in a random interleaving.
EXPECTED = (POSError, asyncio.CancelledError)
#: Everything here is in memory: a step not done in this many seconds is
#: stuck, and fails the example (so shrinking a fault ends, too).
STUCK = 2.0


class FakePeer:
    """The transport's side of a session: closing ends the session."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.session: Session | None = None

    def send_async(self, method: str, args: tuple[Any, ...]) -> None:
        pass

    async def send_blob(self, oid: bytes, serial: bytes, path: str) -> None:
        raise AssertionError("no blobs here")

    def close(self) -> None:
        assert self.session is not None
        asyncio.get_running_loop().call_soon(self.session.disconnected)


class Client:
    """One client: its session (replaced after a disconnect) and its calls."""

    tokens = itertools.count(1)

    def __init__(self, server: StorageServer, name: str) -> None:
        self.server = server
        self.name = name
        self.calls: list[asyncio.Task[Any]] = []
        self.connect()

    def connect(self) -> None:
        peer = FakePeer(self.name)
        self.session = peer.session = Session(self.server, peer)
        self.session.register("1", False)
        self.token = 0

    def call_async(self, method: str, *args: Any) -> None:
        # As the transport does: an async call's error waits for the vote.
        try:
            getattr(self.session, method)(*args)
        except Exception as exc:
            self.session.async_call_failed(method, exc)

    def call(self, method: str, *args: Any) -> None:
        answer = call_now(getattr(self.session, method), *args)
        self.calls.append(asyncio.ensure_future(answer))

    def act(self, action: str, oid: bytes) -> None:
        if action == "begin":
            self.token = next(self.tokens)
            self.call_async("tpc_begin", self.token, "", "", {})
        elif action == "store":
            data = zodb_pickle(MinPO(self.token))
            self.call_async("storea", oid, z64, data, self.token)
        elif action in ("vote", "finish", "abort"):
            method = "tpc_finish" if action == "finish" else f"tpc_{action}"
            self.call("vote" if action == "vote" else method, self.token)
        elif action == "disconnect":
            self.session.disconnected()
            self.connect()


async def _interleave(actions: list[tuple[int, str, int]]) -> None:
    server = StorageServer({"1": MappingStorage()}, ServerSettings())
    server.attach(asyncio.get_running_loop())
    hosted = server.hosted["1"]
    oids = [hosted.storage.new_oid() for _ in range(2)]
    clients = [Client(server, "first"), Client(server, "second")]
    try:
        for index, action, oid in actions:
            if action == "wait":
                await asyncio.sleep(0.005)
            else:
                clients[index].act(action, oids[oid])
        # Let votes under way end, so that clients also leave voted ones.
        await asyncio.sleep(0.02)
        for client in clients:
            client.session.disconnected()
        calls = [call for client in clients for call in client.calls]
        running = [*calls, *hosted.running, *server.tasks.running()]
        if running:
            _done, pending = await asyncio.wait(running, timeout=STUCK)
            assert not pending, pending
        for call in calls:
            if not call.cancelled() and call.exception() is not None:
                assert isinstance(call.exception(), EXPECTED), call.exception()
        assert hosted.commit_lock.holder is None
        assert hosted.commit_lock.waiting == 0
        assert hosted.stats.active_txns == 0
        # The storage is out of every transaction: a new client commits.
        last = Client(server, "last")
        last.act("begin", oids[0])
        try:
            serial = hosted.storage.load(oids[1])[1]
        except POSKeyError:
            serial = z64  # never committed
        last.session.storea(oids[1], serial, zodb_pickle(MinPO(0)), last.token)
        async with asyncio.timeout(STUCK):  # a fault fails the example, not hangs
            assert await answer(last.session.vote, last.token) is not None
            assert await answer(last.session.tpc_finish, last.token) is not None
        last.session.disconnected()
    finally:
        async with asyncio.timeout(STUCK):
            await server.tasks.close()
        if hosted.commit_lock.holder is None:  # else the storage would hang
            server.close_storages()


@settings(max_examples=60, deadline=None)
# A second vote and a store while the first vote runs: the store's error
# must not end the voting transaction behind the storage's back (which
# left the storage in a transaction and every later vote waiting).
@example(
    [(0, "begin", 0), (0, "vote", 1), (0, "wait", 1), (0, "vote", 0), (0, "store", 0)]
)
@example([(0, "begin", 0), (0, "vote", 1), (0, "vote", 0), (0, "store", 0)])
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.sampled_from(ACTIONS), st.integers(0, 1)),
        max_size=30,
    )
)
def test_random_interleavings_leave_no_transaction_behind(
    actions: list[tuple[int, str, int]],
) -> None:
    asyncio.run(_interleave(actions))


@pytest.mark.timeout(60)
def test_a_planted_fault_fails_the_interleaving_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A commit lock that is never released: the check reports it."""
    monkeypatch.setattr(CommitLock, "release", lambda self, holder: None)
    steps = [(0, "begin", 0), (0, "store", 0), (0, "vote", 0), (0, "finish", 0)]
    with pytest.raises((AssertionError, TimeoutError)):
        asyncio.run(_interleave(steps))


def test_steps_the_table_does_not_allow_are_refused() -> None:
    state = TransactionState()
    with pytest.raises(IllegalTransitionError, match="'finish' is not allowed while"):
        state.process(Event.FINISH)
    assert state.process(Event.VOTE) is State.AWAITING_LOCK
    with pytest.raises(IllegalTransitionError):
        state.process(Event.VOTED)  # not before the lock is granted
    assert state.process(Event.LOCK_GRANTED) is State.VOTING
    assert state.locked
    assert state.in_storage
    assert state.process(Event.VOTED) is State.VOTED
    assert state.process(Event.FINISH) is State.FINISHING
    assert state.in_storage
    assert not state.locked
    with pytest.raises(IllegalTransitionError):
        state.process(Event.ABORT)
