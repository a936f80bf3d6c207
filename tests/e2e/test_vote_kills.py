"""A client killed or stopped mid-vote does not keep the commit lock.

A ZEO 6 client in a process of its own votes (the server grants it the
commit lock), another client's commit waits for the lock, and the first
process is signalled before its ``tpc_finish`` (``support.vote_kills``):

- SIGKILLed, its socket is closed by the kernel: the server aborts its
  transaction and the other commit lands at once, whether or not a
  ``transaction-timeout`` is set -- well before that timeout would have
  freed the lock;
- SIGSTOPped, its connection stays open and silent: only the
  ``transaction-timeout`` frees the lock, so the other commit lands about
  that long after the vote, not before, and the voted transaction is not
  in the file.

``python -m stress.torture --vote-kills N`` repeats them N times.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from support.vote_kills import EARLY, run_trials

TIMEOUT = 5.0
#: The lock of a killed client is free within this long of the kill: the
#: disconnect, not the transaction timeout (TIMEOUT after the vote), freed
#: it.
AT_ONCE = 2.0
#: How late after the timeout the other commit may land, on a busy machine.
LATE = 10.0
TRIALS = 2


@pytest.mark.parametrize(
    "transaction_timeout", [TIMEOUT, None], ids=["timeout", "no-timeout"]
)
def test_a_client_killed_mid_vote_releases_the_lock_at_once(
    tmp_path: Path, transaction_timeout: float | None
) -> None:
    series = run_trials(
        tmp_path,
        signal_number=signal.SIGKILL,
        transaction_timeout=transaction_timeout,
        trials=TRIALS,
        deadline=AT_ONCE,
    )
    assert len(series.trials) == TRIALS
    for trial in series.trials:
        assert trial.signal_to_commit < AT_ONCE, trial
        assert trial.vote_to_commit < TIMEOUT, trial


def test_a_stopped_client_mid_vote_holds_the_lock_until_the_timeout(
    tmp_path: Path,
) -> None:
    series = run_trials(
        tmp_path,
        signal_number=signal.SIGSTOP,
        transaction_timeout=TIMEOUT,
        trials=1,
        deadline=TIMEOUT + LATE,
    )
    [trial] = series.trials
    assert TIMEOUT - EARLY <= trial.vote_to_commit <= TIMEOUT + LATE, trial
