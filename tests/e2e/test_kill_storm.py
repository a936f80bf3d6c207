"""A storm of ``kill -9``: writers keep committing while the server dies.

Four writers (two through ZEO 6's client, two through ours, one of each
with blobs) commit while the server process is SIGKILLed and restarted at
random (seeded) instants; afterwards every acknowledged commit and blob is
there, no writer is stuck, and the file passes ``fstest``.  The machinery
is ``support.kill_storm``, which ``python -m stress.torture`` runs long.

The default run is short (30 kills).  ``ZODBSERVER_KILL_STORM=N`` runs N
kills, and ``ZODBSERVER_KILL_STORM_SEED`` replays the instants of a failed
run.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from support.kill_storm import check_storage, run_storm

KILLS = int(os.environ.get("ZODBSERVER_KILL_STORM", "30"))
SEED = int(os.environ.get("ZODBSERVER_KILL_STORM_SEED", str(random.randrange(1 << 30))))


def test_acknowledged_commits_survive_a_storm_of_kills(tmp_path: Path) -> None:
    result = run_storm(tmp_path, kills=KILLS, seed=SEED)
    assert len(result.restarts) == KILLS
    verified = check_storage(tmp_path, result.writers, SEED)
    assert verified.commits == result.acknowledged, SEED
    assert verified.blobs == sum(
        len(writer.acks) for writer in result.writers if writer.blobs
    )
    # Every restart came back to accept connections; the writers committed
    # through at least one of the restarted processes.
    assert all(restart.listening > restart.spawned for restart in result.restarts)
    assert any(restart.first_commit for restart in result.restarts), SEED
