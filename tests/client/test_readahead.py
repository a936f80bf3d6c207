"""Readahead against live servers: siblings arrive before they are asked for,
and a prefetched sibling never shows a transaction data from another snapshot.
"""

from __future__ import annotations

from collections.abc import Callable

import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZODB.utils import p64, u64

from zodbserver.client import ClientStorage
from zodbserver.client.readahead import FIRST_WINDOW

from .servers import wait_for_commit

MakeClient = Callable[..., ClientStorage]
COUNT = 100


def _fill(db: ZODB.DB) -> list[bytes]:
    with db.transaction() as conn:
        container = conn.root()["container"] = PersistentMapping()
        for index in range(COUNT):
            container[index] = PersistentMapping(value=index)
    with db.transaction() as conn:
        return [child._p_oid for child in conn.root()["container"].values()]


def _cached(client: ClientStorage, oids: list[bytes]) -> list[bool]:
    before = p64(u64(client.lastTransaction()) + 1)
    return [client._cache.load_before(oid, before) is not None for oid in oids]


def _read_two_children(client: ClientStorage) -> None:
    db = ZODB.DB(client)
    try:
        with db.transaction() as conn:
            container = conn.root()["container"]
            assert container[0]["value"] == 0
            assert container[1]["value"] == 1
        client.ping()  # replies come in order: the prefetches are in
    finally:
        db.close()


def test_second_sibling_miss_prefetches_a_window(make_client: MakeClient) -> None:
    writer = ZODB.DB(make_client())
    oids = _fill(writer)
    reader = make_client()
    wait_for_commit(writer.storage, reader)
    _read_two_children(reader)
    window = 2 + FIRST_WINDOW
    assert all(_cached(reader, oids[:window]))
    assert not any(_cached(reader, oids[window:]))
    writer.close()


def test_reading_a_prefetched_window_asks_for_the_next_one(
    make_client: MakeClient,
) -> None:
    """The first sibling of a window, read from the cache, prefetches the
    next window: a scan finds its objects already there."""
    writer = ZODB.DB(make_client())
    oids = _fill(writer)
    reader = make_client()
    wait_for_commit(writer.storage, reader)
    db = ZODB.DB(reader)
    with db.transaction() as conn:
        container = conn.root()["container"]
        assert container[0]["value"] == 0
        assert container[1]["value"] == 1
        reader.ping()  # the first window is in
        misses = reader._cache.misses
        assert container[2]["value"] == 2  # a cache hit, on the mark
        assert reader._cache.misses == misses
        reader.ping()
    second_end = 3 + 2 * FIRST_WINDOW
    assert all(_cached(reader, oids[:second_end]))
    assert not any(_cached(reader, oids[second_end:]))
    db.close()
    writer.close()


def test_a_miss_answered_from_the_cache_still_prefetches(
    make_client: MakeClient,
) -> None:
    """The application's miss crosses to the connection thread; if the
    object arrived meanwhile (a prefetch landing), the miss is answered from
    the cache, and the siblings readahead proposed must still be loaded:
    readahead counts them as requested and proposes them only once."""
    writer = ZODB.DB(make_client())
    oids = _fill(writer)
    reader = make_client()
    wait_for_commit(writer.storage, reader)
    before = p64(u64(reader.lastTransaction()) + 1)
    db = ZODB.DB(reader)
    with db.transaction() as conn:
        assert conn.root()["container"][0]["value"] == 0  # first miss
        data, start, end = writer.storage.loadBefore(oids[1], before)
        reader._cache.store(oids[1], start, end, data)  # it "arrived"
        loaded = reader._thread.wait_for(
            reader._manager.start_load, oids[1], before, 10
        )
        assert loaded == (data, start, end)
        reader.ping()
    window = 2 + FIRST_WINDOW
    assert all(_cached(reader, oids[:window]))
    assert not any(_cached(reader, oids[window:]))
    db.close()
    writer.close()


def test_readahead_zero_prefetches_nothing(make_client: MakeClient) -> None:
    writer = ZODB.DB(make_client())
    oids = _fill(writer)
    reader = make_client(readahead=0)
    wait_for_commit(writer.storage, reader)
    _read_two_children(reader)
    assert _cached(reader, oids) == [True, True] + [False] * (COUNT - 2)
    writer.close()


def test_a_scan_sees_its_own_snapshot(make_client: MakeClient) -> None:
    """Children changed after the reader's transaction began are prefetched
    as of that transaction, and seen new only in the next one."""
    writer = ZODB.DB(make_client())
    _fill(writer)
    reader = ZODB.DB(make_client())
    wait_for_commit(writer.storage, reader.storage)
    manager = transaction.TransactionManager()
    conn = reader.open(manager)
    container = conn.root()["container"]
    with writer.transaction() as other:
        for index in range(COUNT):
            other.root()["container"][index]["value"] = -index
    wait_for_commit(writer.storage, reader.storage)
    assert [container[index]["value"] for index in range(COUNT)] == list(range(COUNT))
    manager.begin()
    assert [container[index]["value"] for index in range(COUNT)] == [
        -index for index in range(COUNT)
    ]
    conn.close()
    reader.close()
    writer.close()
