"""A replica catches up from an empty storage, killed (SIGKILL) part-way
and again while following a writer: afterwards it holds exactly the
primary's transactions, records and blobs -- no gap, no duplicate.  The
machinery is ``support.catchup``; ``python -m stress.replica_catchup``
runs it on 100,000 transactions and reports the rate and memory."""

from __future__ import annotations

from pathlib import Path

from ZODB.FileStorage import FileStorage

from support.catchup import run_catchup
from support.replicas import same_files


def test_a_killed_replica_resumes_without_gap_or_duplicate(tmp_path: Path) -> None:
    result = run_catchup(tmp_path, transactions=3000)
    assert result.kills == 2
    assert same_files(tmp_path / "primary", tmp_path / "replica") == []
    replica = FileStorage(str(tmp_path / "replica" / "Data.fs"), read_only=True)
    try:
        assert len(list(replica.iterator())) > 3000
    finally:
        replica.close()
