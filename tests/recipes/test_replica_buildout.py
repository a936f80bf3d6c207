"""A buildout with a primary part and a replica part: the replica follows
(``replicate-from``), serves reads, and ``bin/replica promote`` makes it a
primary that takes writes.  Plus the recipe's checks of the options."""

from __future__ import annotations

from pathlib import Path

import pytest
import ZODB

from support.replicas import last_tid
from support.waiting import wait_until
from zodbserver import ClientStorage

from .conftest import Pids, buildout_header, free_port, run_buildout
from .test_server_recipe_options import load_conf, make_recipe, run_script, wrong


def test_the_replication_options_reach_zeo_conf(tmp_path: Path) -> None:
    make_recipe(
        tmp_path,
        **{
            "zeo-address": "8100",
            "replicate-from": "primary.example.com:8100",
            "sync-replicas": "1",
            "sync-replicas-timeout": "5",
            "sync-replicas-missing": "async",
        },
    ).install()
    settings = load_conf(tmp_path).settings
    assert settings.replicate_from == ("primary.example.com", 8100)
    assert settings.sync_replicas == 1
    assert settings.sync_replicas_timeout == 5
    assert settings.sync_replicas_missing == "async"


@pytest.mark.parametrize(
    ("option", "options", "message"),
    [
        ("sync-replicas-missing", {"sync-replicas-missing": "maybe"}, "fail or async"),
        ("replicate-from", {"replicate-from": "8100"}, "own zeo-address"),
        ("sync-replicas", {"sync-replicas": "-1"}, ""),
    ],
)
def test_wrong_replication_options(
    tmp_path: Path, option: str, options: dict[str, str], message: str
) -> None:
    assert message in wrong(tmp_path, option, **{"zeo-address": "8100", **options})


def test_buildout_with_a_primary_and_a_replica(tmp_path: Path, pids: Pids) -> None:
    primary_port, replica_port = free_port(), free_port()
    config = buildout_header("primary replica") + (
        f"""
[primary]
recipe = zodbserver:server
zeo-address = {primary_port}
file-storage = var/primary/Data.fs
blob-storage = var/primary/blobs

[replica]
recipe = zodbserver:server
zeo-address = {replica_port}
file-storage = var/replica/Data.fs
blob-storage = var/replica/blobs
replicate-from = {primary_port}
"""
    )
    result = run_buildout(tmp_path, config)
    assert result.returncode == 0, result.stdout + result.stderr
    var = tmp_path / "var"
    for part in ("primary", "replica"):
        pids.watch(var / f"{part}.pid")
        started = run_script(tmp_path / "bin" / part, "start")
        assert started.returncode == 0, started.stderr
    primary = f"127.0.0.1:{primary_port}"
    replica = f"127.0.0.1:{replica_port}"
    db = ZODB.DB(ClientStorage(primary, wait_timeout=30))
    with db.transaction() as conn:
        conn.root()["value"] = "from the primary"
    db.close()
    wait_until(
        lambda: (
            last_tid(("127.0.0.1", replica_port))
            == last_tid(("127.0.0.1", primary_port))
        ),
        "the replica to follow",
        timeout=30,
    )
    stopped = run_script(tmp_path / "bin" / "primary", "stop")
    assert stopped.returncode == 0, stopped.stderr
    promoted = run_script(tmp_path / "bin" / "replica", "promote")
    assert promoted.returncode == 0, promoted.stderr
    assert "epoch 2" in promoted.stdout
    db = ZODB.DB(ClientStorage(replica, wait_timeout=30))
    try:
        with db.transaction() as conn:
            assert conn.root()["value"] == "from the primary"
            conn.root()["value"] = "from the promoted replica"
    finally:
        db.close()
    stopped = run_script(tmp_path / "bin" / "replica", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert (var / "replica" / "Data.fs.replication").exists()
