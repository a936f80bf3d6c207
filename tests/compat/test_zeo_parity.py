"""Calls as ZEO 6's client and ZODB's test suites make them, answered as
ZEO's server answers them: ``str`` serials, ``KeyError`` for iterators that
are gone, asynchronous methods sent as calls, and a bad argument on an
asynchronous transaction call reported at the vote."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from ZEO.ClientStorage import ClientStorage
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle, zodb_unpickle

from zodbserver.server.thread import ServerThread


@pytest.fixture(params=[True, False], ids=["M5", "Z5"])
def storage(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[ClientStorage]:
    server = ServerThread(
        {"1": FileStorage(os.fspath(tmp_path / "Data.fs"))}, msgpack=request.param
    )
    address = server.start()
    client = ClientStorage(address, wait_timeout=10)
    try:
        yield client
    finally:
        client.close()
        server.stop()


def test_a_str_serial_is_taken_as_its_latin1_bytes(storage: ClientStorage) -> None:
    oid = storage.new_oid()
    metadata = TransactionMetaData()
    storage.tpc_begin(metadata)
    storage.store(oid, "\0" * 8, zodb_pickle(MinPO(1)), "", metadata)
    storage.tpc_vote(metadata)
    tid = storage.tpc_finish(metadata)
    data, serial = storage.load(oid)
    assert (zodb_unpickle(data), serial) == (MinPO(1), tid)


def test_a_bad_async_argument_fails_the_vote_not_the_connection(
    storage: ClientStorage,
) -> None:
    oid = storage.new_oid()
    metadata = TransactionMetaData()
    storage.tpc_begin(metadata)
    storage.store(oid, "\u0100" * 8, zodb_pickle(MinPO(1)), "", metadata)
    with pytest.raises(TypeError, match=r"storea\(\) argument 2 must be"):
        storage.tpc_vote(metadata)
    storage.tpc_abort(metadata)
    assert storage.is_connected()
    # The next transaction on the same connection commits.
    metadata = TransactionMetaData()
    storage.tpc_begin(metadata)
    storage.store(oid, b"\0" * 8, zodb_pickle(MinPO(2)), "", metadata)
    storage.tpc_vote(metadata)
    assert storage.tpc_finish(metadata) == storage.lastTransaction()


def test_iterators_that_are_gone_raise_key_error(storage: ClientStorage) -> None:
    iid = storage._call("iterator_start", None, None)
    assert storage._call("iterator_next", iid) is None  # empty: exhausted
    with pytest.raises(KeyError):
        storage._call("iterator_next", iid)
    iid = storage._call("iterator_start", None, None)
    storage._call("iterator_gc", [iid])
    with pytest.raises(KeyError):
        storage._call("iterator_next", iid)
    with pytest.raises(KeyError):
        storage._call("iterator_record_start", iid, b"\0" * 8)
    with pytest.raises(KeyError):
        storage._call("iterator_record_next", iid)


def test_async_methods_sent_as_calls_are_answered(storage: ClientStorage) -> None:
    oid = storage.new_oid()
    token = 7
    assert storage._call("tpc_begin", token, "", "", {}, None, " ") is None
    assert storage._call("storea", oid, b"\0" * 8, zodb_pickle(MinPO(3)), token) is None
    assert list(storage._call("vote", token)) == []  # nothing resolved
    tid = storage._call("tpc_finish", token)
    assert storage.loadBefore(oid, b"\xff" * 8)[1] == tid
