"""The states of one client's transaction in the server.

Theory of operation
-------------------

A session has at most one transaction.  It goes through these states::

    BUFFERING --vote--> AWAITING_LOCK --lock_granted--> VOTING
        ^                                                 |  |  |
        +------------------conflicts----------------------+  |  abort_requested
                                                             |  v
          VOTED <--------------------voted-------------------+  ABORT_REQUESTED
            |  \\                                                |
         finish  abort                                     voted / conflicts
            v      v                                            v
      FINISHING   ABORTING <------------------------------------+

``BUFFERING``: ``tpc_begin`` was received; stores are buffered in the
session.  ``AWAITING_LOCK``: the client voted; we wait for the storage's
commit lock.  ``VOTING``: we hold the lock and the storage thread replays
the buffer and votes.  ``conflicts`` sends the transaction back to
``BUFFERING`` (the client resolves them and votes again); ``voted`` leaves it
``VOTED``, holding the lock until ``tpc_finish`` (``FINISHING``) or
``tpc_abort`` (``ABORTING``).  A ``tpc_abort`` that arrives while the storage
thread votes cannot interrupt it: ``ABORT_REQUESTED`` remembers it, and the
vote's end aborts.  ``end`` -- a finish or abort done, a vote that failed, a
lost connection -- leaves every state for "no transaction", which is not a
state here: the session then has no ``TransactionState`` at all.

A step the table does not allow raises ``IllegalTransitionError`` (the server's
own mistake, never the client's: client calls that do not fit the state are
refused before they get here), so the rules live in this one place.
"""

from __future__ import annotations

import enum

from ..errors import LocalProtocolError


class State(enum.Enum):
    BUFFERING = "buffering"
    AWAITING_LOCK = "awaiting the commit lock"
    VOTING = "voting"
    ABORT_REQUESTED = "voting, abort requested"
    VOTED = "voted"
    FINISHING = "finishing"
    ABORTING = "aborting"


class Event(enum.Enum):
    VOTE = "vote"
    LOCK_GRANTED = "lock granted"
    CONFLICTS = "conflicts"
    VOTED = "voted"
    ABORT_REQUESTED = "abort requested"
    FINISH = "finish"
    ABORT = "abort"


_TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.BUFFERING, Event.VOTE): State.AWAITING_LOCK,
    (State.AWAITING_LOCK, Event.LOCK_GRANTED): State.VOTING,
    (State.VOTING, Event.CONFLICTS): State.BUFFERING,
    (State.VOTING, Event.VOTED): State.VOTED,
    (State.VOTING, Event.ABORT_REQUESTED): State.ABORT_REQUESTED,
    (State.VOTING, Event.ABORT): State.ABORTING,
    (State.ABORT_REQUESTED, Event.ABORT_REQUESTED): State.ABORT_REQUESTED,
    (State.ABORT_REQUESTED, Event.ABORT): State.ABORTING,
    (State.VOTED, Event.FINISH): State.FINISHING,
    (State.VOTED, Event.ABORT): State.ABORTING,
}

#: States in which the storage thread is working on the transaction: a
#: lost connection leaves the clean-up to that work's end.
IN_STORAGE = frozenset(
    {State.VOTING, State.ABORT_REQUESTED, State.FINISHING, State.ABORTING}
)

#: States in which the transaction holds the storage's commit lock.
LOCKED = frozenset({State.VOTING, State.ABORT_REQUESTED, State.VOTED})


class IllegalTransitionError(LocalProtocolError):
    """The server tried a step its transaction's state does not allow."""


class TransactionState:
    """The state of one transaction; starts ``BUFFERING``."""

    def __init__(self) -> None:
        self.state = State.BUFFERING

    def __repr__(self) -> str:
        return f"<TransactionState {self.state.value}>"

    def process(self, event: Event) -> State:
        """Take one step; return the new state."""
        try:
            self.state = _TRANSITIONS[self.state, event]
        except KeyError:
            raise IllegalTransitionError(
                f"{event.value!r} is not allowed while {self.state.value}"
            ) from None
        return self.state

    @property
    def in_storage(self) -> bool:
        return self.state in IN_STORAGE

    @property
    def locked(self) -> bool:
        return self.state in LOCKED
