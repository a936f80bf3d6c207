"""A transaction far bigger than the spool threshold costs the server little
memory.

Our server runs as a child process (``transaction-spool-threshold 1MB``)
over a FileStorage; a ZEO 6 client in the test process commits one
transaction of 200 objects of 1 MB of random bytes.  The server's peak
resident memory (``VmHWM`` in ``/proc/PID/status``) may grow by less than
``MEMORY_BUDGET`` over the commit: the stores wait in the spool file, not in
the server's memory (without the spool it grows by about the transaction's
size).
"""

from __future__ import annotations

import os
from pathlib import Path

from ZEO.ClientStorage import ClientStorage
from ZODB.Connection import TransactionMetaData
from ZODB.utils import z64

from support.server_processes import ServerProcess
from support.waiting import wait_until

MB = 1024 * 1024
OBJECTS = 200
OBJECT_SIZE = MB
MEMORY_BUDGET = 64 * MB


def commit(client: ClientStorage, objects: int, directory: Path) -> list[bytes]:
    """Commit ``objects`` new objects of random data; their oids.  Checks
    that the transaction spooled."""
    metadata = TransactionMetaData()
    client.tpc_begin(metadata)
    oids = []
    for _ in range(objects):
        oid = client.new_oid()
        client.store(oid, z64, os.urandom(OBJECT_SIZE), "", metadata)
        oids.append(oid)
    wait_until(
        lambda: list(directory.glob(".zodbserver-txn-Data.fs-*")),
        "the transaction to spool",
        timeout=30,
    )
    client.tpc_vote(metadata)
    client.tpc_finish(metadata)
    return oids


def test_a_200_mb_transaction_grows_the_server_by_little(tmp_path: Path) -> None:
    server = ServerProcess(
        "ours", tmp_path, zeo_lines=("transaction-spool-threshold 1MB",)
    )
    with server:
        server.start()
        client = ClientStorage(server.address, wait_timeout=30, cache_size=MB)
        try:
            commit(client, 2, tmp_path)  # warm up: code paths, 1 MB buffers
            peak_before = server.proc_status("VmHWM") * 1024
            oids = commit(client, OBJECTS, tmp_path)
            growth = server.proc_status("VmHWM") * 1024 - peak_before
            assert list(tmp_path.glob(".zodbserver-txn-*")) == []
            last = oids[-1]
            assert len(client.load(last)[0]) == OBJECT_SIZE
        finally:
            client.close()
        assert os.path.getsize(server.path) > OBJECTS * OBJECT_SIZE
    assert growth < MEMORY_BUDGET, f"the server grew by {growth / MB:.0f} MB"
