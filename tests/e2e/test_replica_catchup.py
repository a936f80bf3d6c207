"""A replica catches up from an empty storage, killed (SIGKILL) part-way
and again while following a writer: afterwards it holds exactly the
primary's transactions, records and blobs -- no gap, no duplicate.  The
machinery is ``support.catchup``; ``python -m stress.replica_catchup``
runs it on 100,000 transactions and reports the rate and memory."""

from __future__ import annotations

from pathlib import Path

from ZODB.FileStorage import FileStorage

from support.catchup import run_catchup
from support.replicas import same_history


def test_a_killed_replica_resumes_without_gap_or_duplicate(tmp_path: Path) -> None:
    result = run_catchup(tmp_path, transactions=3000)
    assert result.kills == 2
    primary, replica = (
        FileStorage(
            str(tmp_path / name / "Data.fs"),
            blob_dir=str(tmp_path / name / "blobs"),
            read_only=True,
        )
        for name in ("primary", "replica")
    )
    try:
        assert same_history(primary, replica) == []
        assert len(list(replica.iterator())) > 3000
    finally:
        primary.close()
        replica.close()
