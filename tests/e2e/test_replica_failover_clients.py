"""Clients ride a failover: given the primary and a replica as their
address list with ``read_only_fallback``, ZEO 6's client and ours keep
reading once the primary is gone, write again once the replica is promoted
-- without restarting -- and read no stale data afterwards."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import transaction
import ZEO
import ZODB

from support.replicas import file_storage, wait_caught_up
from support.waiting import wait_until
from zodbserver.client import ClientStorage
from zodbserver.peer_call import call
from zodbserver.server.thread import ServerThread


def ours(addresses: list[Any], blob_dir: Path) -> Any:
    return ClientStorage(
        addresses, read_only_fallback=True, wait_timeout=30, blob_dir=str(blob_dir)
    )


def zeo(addresses: list[Any], blob_dir: Path) -> Any:
    return ZEO.client(
        addresses, read_only_fallback=True, wait_timeout=30, blob_dir=str(blob_dir)
    )


CLIENTS: dict[str, Callable[[list[Any], Path], Any]] = {"ours": ours, "zeo": zeo}


def _read(db: ZODB.DB, key: str) -> object:
    manager = transaction.TransactionManager()
    conn = db.open(manager)
    try:
        manager.begin()
        return conn.root().get(key)
    except Exception:
        return None
    finally:
        manager.abort()
        conn.close()


def _write(db: ZODB.DB, key: str, value: object) -> bool:
    manager = transaction.TransactionManager()
    conn = db.open(manager)
    try:
        conn.root()[key] = value
        manager.commit()
        return True
    except Exception:
        manager.abort()
        return False
    finally:
        conn.close()


@pytest.mark.parametrize("kind", sorted(CLIENTS))
def test_clients_keep_reading_then_write_after_promotion(
    tmp_path: Path, kind: str
) -> None:
    make = CLIENTS[kind]
    primary = ServerThread({"1": file_storage(tmp_path / "primary")})
    primary_address = primary.start()
    replica = ServerThread(
        {"1": file_storage(tmp_path / "replica")}, replicate_from=primary_address
    )
    replica_address = replica.start()
    addresses = [primary_address, replica_address]
    ZODB.DB(ClientStorage(primary_address, wait_timeout=30)).close()  # the root
    wait_caught_up(primary_address, replica_address)
    storage = make(addresses, tmp_path / "blobs")
    # Either server may answer first; a fallback client goes on looking for
    # a writable one, and drops the read-only connection (and what was
    # under way on it) when it finds it.
    wait_until(lambda: not storage.isReadOnly(), "a writable connection")
    db = ZODB.DB(storage)
    other_kind = "zeo" if kind == "ours" else "ours"
    try:
        assert _write(db, "value", "before")
        wait_caught_up(primary_address, replica_address)
        primary.stop()
        # Reads go on through the replica, read-only.
        wait_until(
            lambda: _read(db, "value") == "before" and storage.isReadOnly(),
            "reads through the replica",
            timeout=20,
        )
        assert not _write(db, "value", "refused")
        call(replica_address, "promote")
        wait_until(
            lambda: _write(db, "value", "after"), "a write after promotion", timeout=30
        )
        # No stale read afterwards, from this client or a fresh one of the
        # other kind.
        assert _read(db, "value") == "after"
        fresh = ZODB.DB(CLIENTS[other_kind](addresses, tmp_path / "fresh-blobs"))
        try:
            assert _read(fresh, "value") == "after"
        finally:
            fresh.close()
    finally:
        db.close()
        replica.stop()
