"""Failover loses no acknowledged commit: with ``sync-replicas 1`` the
primary is SIGKILLed under writers at random instants, the replica is
promoted and holds every commit (and blob) acknowledged; the killed server
rejoins as the new replica.  The machinery is ``support.failover``, which
``python -m stress.failover`` runs long.

The default run is short (3 rounds); ``ZODBSERVER_FAILOVER_ROUNDS=N`` runs
N, and ``ZODBSERVER_FAILOVER_SEED`` replays a failed run's instants.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from support.failover import run_failover

ROUNDS = int(os.environ.get("ZODBSERVER_FAILOVER_ROUNDS", "3"))
SEED = int(os.environ.get("ZODBSERVER_FAILOVER_SEED", str(random.randrange(1 << 30))))


def test_failover_loses_no_acknowledged_commit(tmp_path: Path) -> None:
    result = run_failover(tmp_path, ROUNDS, SEED)
    assert len(result.rounds) == ROUNDS
    assert result.lost == [], SEED
    # The writers got commits through in every round.
    assert all(r.acknowledged > 0 for r in result.rounds), SEED
