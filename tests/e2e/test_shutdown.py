"""A clean shutdown: open transactions abort, committed ones stay, the
FileStorage index is saved, and clients are told."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import transaction
import ZEO
import ZODB
from ZEO.Exceptions import ClientDisconnected
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage
from ZODB.POSException import POSKeyError
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle

from zodbserver.server.thread import ServerThread


def test_shutdown_aborts_open_transactions_and_saves_the_index(tmp_path: Path) -> None:
    path = str(tmp_path / "Data.fs")
    server = ServerThread({"1": FileStorage(path)})
    address = server.start()
    db = ZODB.DB(ZEO.client(address, wait_timeout=10))
    with db.transaction() as conn:
        conn.root()["kept"] = 1
    committed = db.storage.lastTransaction()
    db.close()

    holder = ZEO.client(address, wait_timeout=2)
    unfinished_oid = holder.new_oid()
    txn = TransactionMetaData()
    holder.tpc_begin(txn)
    holder.store(unfinished_oid, None, zodb_pickle(MinPO("never")), "", txn)
    holder.tpc_vote(txn)  # holds the commit lock

    waiter = ZEO.client(address, wait_timeout=2)
    waiting_oid = waiter.new_oid()
    outcome: list[BaseException] = []
    voting = threading.Event()

    def queue_behind_the_lock() -> None:
        other = TransactionMetaData()
        waiter.tpc_begin(other)
        waiter.store(waiting_oid, None, zodb_pickle(MinPO("queued")), "", other)
        voting.set()
        try:
            waiter.tpc_vote(other)
        except BaseException as exc:
            outcome.append(exc)
            waiter.tpc_abort(other)

    thread = threading.Thread(target=queue_behind_the_lock)
    thread.start()
    assert voting.wait(10)
    index = Path(path + ".index")
    before = index.stat().st_mtime_ns if index.exists() else 0
    try:
        server.stop()
        thread.join(20)
        assert not thread.is_alive()
        assert outcome
        assert isinstance(outcome[0], ClientDisconnected)
        with pytest.raises(ClientDisconnected):
            holder.tpc_finish(txn)
        holder.tpc_abort(txn)
    finally:
        holder.close()
        waiter.close()
        transaction.abort()

    assert index.exists()
    assert index.stat().st_mtime_ns > before
    reopened = FileStorage(path, read_only=True)
    try:
        assert reopened.lastTransaction() == committed
        for oid in (unfinished_oid, waiting_oid):
            with pytest.raises(POSKeyError):
                reopened.load(oid)
    finally:
        reopened.close()
    assert os.path.getsize(path) > 0
