"""The persistent cache file: format, damage, locking, and reuse across runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ZODB.POSException import POSKeyError
from ZODB.tests.MinPO import MinPO
from ZODB.tests.StorageTestBase import zodb_pickle, zodb_unpickle
from ZODB.utils import p64, z64

from zodbserver.client import ClientStorage
from zodbserver.client.cache import CacheRecord, ClientCache
from zodbserver.client.cache_file import (
    MAGIC,
    CacheFile,
    CorruptCacheFileError,
    cache_path,
    decode_cache,
    encode_cache,
)
from zodbserver.client.verification import verify_cache
from zodbserver.errors import StorageInUseError

from .conftest import ServerHandle
from .test_client_server import store

tids = st.integers(1, 2**62).map(p64)
records = st.lists(
    st.builds(
        lambda oid, start, gap, current, data: CacheRecord(
            oid, p64(start), None if current else p64(start + gap), data
        ),
        tids,
        st.integers(1, 2**40),
        st.integers(1, 1000),
        st.booleans(),
        st.binary(max_size=40),
    ),
    max_size=20,
)


@given(tids, records)
def test_encode_decode_round_trip(last_tid: bytes, saved: list[CacheRecord]) -> None:
    assert decode_cache(encode_cache(last_tid, saved)) == (last_tid, saved)


@settings(max_examples=300)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=200).map(lambda tail: MAGIC + tail),
        st.tuples(tids, records, st.integers(0, 400)).map(
            lambda case: encode_cache(case[0], case[1])[: case[2]]
        ),
    )
)
def test_garbage_raises_only_corrupt_cache_file(data: bytes) -> None:
    with contextlib.suppress(CorruptCacheFileError):
        decode_cache(data)


@given(tids, records.filter(bool), st.data())
def test_any_flipped_byte_is_detected(
    last_tid: bytes, saved: list[CacheRecord], data: st.DataObject
) -> None:
    encoded = bytearray(encode_cache(last_tid, saved))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CorruptCacheFileError):
        decode_cache(bytes(encoded))


def test_cache_path_follows_zeo_rules(tmp_path: Any) -> None:
    assert cache_path(None, None, None, "1") is None
    assert cache_path("x.zec", "c", str(tmp_path), "1") == "x.zec"
    assert cache_path(None, "c", str(tmp_path), "1") == str(tmp_path / "c-1.zec")


def test_save_and_load_keep_contents_and_order(tmp_path: Any) -> None:
    cache = ClientCache()
    cache.store(p64(1), p64(2), None, b"a")
    cache.store(p64(2), p64(2), p64(5), b"b")
    cache.set_last_tid(p64(7))
    cache.load(p64(1))  # most recently used now
    file = CacheFile(str(tmp_path / "c.zec"))
    file.save(cache)
    file.close()

    restored = ClientCache()
    file = CacheFile(str(tmp_path / "c.zec"))
    saved = file.read()
    file.close()
    assert saved is not None
    assert (saved.last_tid, saved.count) == (p64(7), 2)
    assert len(restored) == 0  # nothing is taken apart before it is kept
    assert saved.restore_into(restored)
    assert not saved.pending
    assert restored.get_last_tid() == p64(7)
    assert [(r.oid, r.end) for r in restored.records()] == [
        (p64(2), p64(5)),
        (p64(1), None),
    ]
    assert restored.load_before(p64(2), p64(4)) == (b"b", p64(2), p64(5))


def test_a_second_user_of_the_file_is_refused(tmp_path: Any) -> None:
    first = CacheFile(str(tmp_path / "c.zec"))
    try:
        with pytest.raises(StorageInUseError):
            CacheFile(str(tmp_path / "c.zec"))
    finally:
        first.close()
    CacheFile(str(tmp_path / "c.zec")).close()  # free again


def test_damaged_file_is_moved_aside_with_a_warning(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.zec"
    path.write_bytes(b"ZEC3" + bytes(100))
    file = CacheFile(str(path))
    with caplog.at_level(logging.WARNING):
        assert file.read() is None
    file.close()
    assert "damaged" in caplog.text
    assert os.path.exists(str(path) + ".bad")
    assert not path.exists()


def _record_file(path: Any, *records: CacheRecord) -> None:
    """A cache file whose frame and checksum are right, whatever its records."""
    path.write_bytes(encode_cache(p64(5), list(records)))


def test_a_damaged_record_found_when_kept_empties_the_cache(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.zec"
    _record_file(
        path,
        CacheRecord(p64(1), p64(4), None, b"a"),
        CacheRecord(p64(2), p64(4), p64(3), b"ends before it starts"),
    )
    file = CacheFile(str(path))
    saved = file.read()
    assert saved is not None
    cache = ClientCache()
    with caplog.at_level(logging.WARNING):
        assert not saved.restore_into(cache)
    file.close()
    assert len(cache) == 0
    assert not saved.pending
    assert "record ends before it starts" in caplog.text
    assert os.path.exists(str(path) + ".bad")


class _TooOld:
    """A server whose invalidation queue does not reach back far enough."""

    async def call(self, method: str, args: tuple[Any, ...]) -> Any:
        assert method == "getInvalidations"
        return None


class _Database:
    def __init__(self) -> None:
        self.dropped = 0

    def invalidate_transaction(self, tid: bytes, oids: list[bytes]) -> None:
        raise AssertionError("nothing to invalidate")

    def invalidate_cache(self) -> None:
        self.dropped += 1


def test_records_verification_drops_are_never_read(tmp_path: Any) -> None:
    """A snapshot too old to verify is dropped without taking it apart: a
    damaged record in it goes unnoticed, and the file stays where it is."""
    path = tmp_path / "c.zec"
    _record_file(path, CacheRecord(p64(2), p64(4), p64(3), b"never read"))
    file = CacheFile(str(path))
    saved = file.read()
    file.close()
    cache, database = ClientCache(), _Database()
    result = asyncio.run(verify_cache(_TooOld(), cache, p64(9), database, saved))
    assert result == "cache too old, clearing"
    assert saved is not None
    assert not saved.pending
    assert len(cache) == 0
    assert database.dropped == 1
    assert path.exists()
    assert not os.path.exists(str(path) + ".bad")


def test_a_storage_that_never_connected_keeps_the_file(
    server: ServerHandle, tmp_path: Any
) -> None:
    options = dict(client="app", var=str(tmp_path), wait_timeout=10)
    client = ClientStorage(server.addr, **options)
    store(client, client.new_oid(), z64, "cached")
    client.close()
    path = tmp_path / "app-1.zec"
    before = path.read_bytes()

    nowhere = ClientStorage(("127.0.0.1", _closed_port()), wait=False, **options)
    nowhere.close()
    assert path.read_bytes() == before

    client = ClientStorage(server.addr, **options)
    try:
        assert client.verify_result == "cache up to date"
        assert len(client._cache) == 1
    finally:
        client.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_client_reuses_its_cache_file_across_runs(
    server: ServerHandle, tmp_path: Any
) -> None:
    options = dict(client="app", var=str(tmp_path), wait_timeout=10)
    client = ClientStorage(server.addr, **options)
    oid = client.new_oid()
    tid = store(client, oid, z64, "cached")
    client.close()
    assert (tmp_path / "app-1.zec").exists()

    client = ClientStorage(server.addr, **options)
    try:
        assert client.verify_result == "cache up to date"
        loads = client.server_status()["loads"]
        assert client.load(oid) == (zodb_pickle(MinPO("cached")), tid)
        assert client.server_status()["loads"] == loads  # served locally
    finally:
        client.close()


def test_reused_cache_file_is_verified_against_missed_commits(
    make_client: Callable[..., ClientStorage], tmp_path: Any
) -> None:
    options = dict(client="app", var=str(tmp_path))
    client = make_client(**options)
    oid = client.new_oid()
    first = store(client, oid, z64, "old")
    client.close()

    other = make_client()
    second = store(other, oid, first, "new")

    client = make_client(**options)
    assert client.verify_result == "quick verification"
    data, serial = client.load(oid)
    assert (zodb_unpickle(data), serial) == (MinPO("new"), second)
    assert client.lastTransaction() == second


def test_storage_refuses_a_locked_cache_file(
    server: ServerHandle, tmp_path: Any
) -> None:
    holder = CacheFile(str(tmp_path / "app-1.zec"))
    try:
        with pytest.raises(StorageInUseError):
            ClientStorage(server.addr, client="app", var=str(tmp_path))
    finally:
        holder.close()


def test_cache_newer_than_the_server_is_dropped(
    start_server: Callable[..., ServerHandle],
    tmp_path: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server that lost what the client saw is used, with a clean cache."""
    first = start_server("first.fs")
    options = dict(client="app", var=str(tmp_path), wait_timeout=10)
    client = ClientStorage(first.addr, **options)
    oid = client.new_oid()
    seen = store(client, oid, z64, "x")
    client.load(oid)
    client.close()

    behind = start_server("behind.fs")  # a server that never saw that commit
    with caplog.at_level(logging.WARNING):
        client = ClientStorage(behind.addr, **options)
    try:
        assert client.verify_result == "cache newer than server, clearing"
        assert client.lastTransaction() == z64
        assert f"the client cache (tid {seen.hex()}) is newer than the server" in (
            caplog.text
        )
        with pytest.raises(POSKeyError):
            client.load(oid)  # not answered from the dropped cache
        other = client.new_oid()
        committed = store(client, other, z64, "y")
        assert client.lastTransaction() == committed
        assert client.load(other)[1] == committed
    finally:
        client.close()
