"""Whose history a storage holds: the epochs of its primaries.

Every transaction of a replicated storage was written by one primary.  The
first primary's epoch is 1 and begins at the start of the database; each
promotion of a replica begins a new epoch *after* the last transaction the
replica had when it was promoted.  A history is that list of epochs, oldest
first::

    ((1, z64), (2, B))      # epoch 2 began after tid B

A replica keeps the history of the primary it follows, and a promoted one
adds its epoch to it.  When a server (a replica, or a former primary that
comes back) offers to follow a primary, the two histories and the
follower's last tid say whether it can: its transactions must all be ones
the primary has.  ``compare`` decides; it reads no storage.

Two servers promoted from the same epoch (someone promoted twice) disagree
on an epoch: they share the transactions up to the earlier of their two
promotions, and the rest of the follower's are its own.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from ZODB.utils import z64

from ..errors import ConfigurationError


@dataclass(frozen=True, order=True)
class Epoch:
    number: int
    #: The last transaction before this epoch's first (z64: the start).
    begins_after: bytes


History = tuple[Epoch, ...]

#: The history of a storage no one promoted: one epoch, from the start.
FIRST_HISTORY: History = (Epoch(1, z64),)


class Verdict(enum.Enum):
    #: The follower's transactions are the primary's: it follows on.
    FOLLOW = "follow"
    #: The follower has transactions the primary does not: they must be
    #: moved aside before it can follow (``branch`` says after which tid).
    DIVERGED = "diverged"
    #: The follower knows of a later promotion than the primary: the
    #: primary is the one left behind, and must not be followed.
    PRIMARY_STALE = "primary stale"


@dataclass(frozen=True)
class Comparison:
    verdict: Verdict
    #: For DIVERGED: the last transaction the two have in common.
    branch: bytes | None = None


def compare(primary: History, follower: History, follower_last: bytes) -> Comparison:
    """Can a storage with ``follower`` history, at ``follower_last``,
    follow a primary with ``primary`` history?"""
    for mine, theirs in zip(primary, follower, strict=False):
        if mine != theirs:
            # Both were promoted from the epoch before: they share what
            # both had of it, up to the earlier of the two promotions.
            branch = min(mine.begins_after, theirs.begins_after)
            if follower_last > branch:
                return Comparison(Verdict.DIVERGED, branch)
            return Comparison(Verdict.FOLLOW)
    if len(follower) > len(primary):
        return Comparison(Verdict.PRIMARY_STALE)
    if len(follower) < len(primary):
        # The follower's last epoch ended when the next one began.
        branch = primary[len(follower)].begins_after
        if follower_last > branch:
            return Comparison(Verdict.DIVERGED, branch)
    return Comparison(Verdict.FOLLOW)


def promoted(history: History, last_tid: bytes) -> History:
    """The history once a replica at ``last_tid`` is promoted."""
    return (*history, Epoch(history[-1].number + 1, last_tid))


def to_json(history: History) -> list[list[object]]:
    return [[epoch.number, epoch.begins_after.hex()] for epoch in history]


def from_json(value: object, source: str) -> History:
    """A history read from a file or the wire; ``ConfigurationError``
    (naming ``source``) when it is not one."""
    if not isinstance(value, Sequence) or isinstance(value, str | bytes) or not value:
        raise ConfigurationError(f"{source}: a replication history must be a list")
    epochs = []
    for item in value:
        try:
            number, after = item
            epoch = Epoch(int(number), bytes.fromhex(after))
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"{source}: not an epoch [NUMBER, TID-HEX]: {item!r:.80}"
            ) from None
        if len(epoch.begins_after) != 8 or epoch.number < 1:
            raise ConfigurationError(f"{source}: not an epoch: {item!r:.80}")
        epochs.append(epoch)
    history = tuple(epochs)
    if history[0] != FIRST_HISTORY[0] or any(
        later.number != earlier.number + 1 or later.begins_after < earlier.begins_after
        for earlier, later in itertools.pairwise(history)
    ):
        raise ConfigurationError(
            f"{source}: epochs must count up from [1, 0000000000000000] "
            "and begin in tid order"
        )
    return history
