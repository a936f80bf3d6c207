"""The client cache alone: MVCC answers, invalidation, eviction."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ZODB.utils import p64, z64

from zodbserver.client.cache import RECORD_OVERHEAD, CacheRecord, ClientCache

OID = p64(1)


def test_current_record_answers_loads_after_its_start() -> None:
    cache = ClientCache()
    cache.store(OID, p64(5), None, b"five")
    assert cache.load(OID) == (b"five", p64(5))
    assert cache.load_before(OID, p64(6)) == (b"five", p64(5), None)
    assert cache.load_before(OID, p64(5)) is None  # not yet written then


def test_invalidate_turns_current_into_noncurrent() -> None:
    cache = ClientCache()
    cache.store(OID, p64(5), None, b"five")
    cache.invalidate(OID, p64(9))
    assert cache.load(OID) is None
    assert cache.load_before(OID, p64(9)) == (b"five", p64(5), p64(9))
    assert cache.load_before(OID, p64(6)) == (b"five", p64(5), p64(9))
    assert cache.load_before(OID, p64(10)) is None


def test_invalidate_with_none_forgets_the_object() -> None:
    cache = ClientCache()
    cache.store(OID, p64(5), None, b"five")
    cache.invalidate(OID, None)
    assert cache.load_before(OID, p64(6)) is None
    assert len(cache) == 0


def test_invalidation_at_the_same_tid_keeps_the_record() -> None:
    cache = ClientCache()
    cache.store(OID, p64(5), None, b"five")
    cache.invalidate(OID, p64(5))
    assert cache.load(OID) == (b"five", p64(5))


def test_a_later_current_store_closes_the_older_one() -> None:
    cache = ClientCache()
    cache.store(OID, p64(5), None, b"five")
    cache.store(OID, p64(7), None, b"seven")
    assert cache.load(OID) == (b"seven", p64(7))
    assert cache.load_before(OID, p64(7)) == (b"five", p64(5), p64(7))
    cache.store(OID, p64(3), None, b"three")  # stale: ignored
    assert cache.load(OID) == (b"seven", p64(7))


def test_eviction_drops_least_recently_used_first() -> None:
    size = 3 * (RECORD_OVERHEAD + 10)
    cache = ClientCache(size)
    for n in range(1, 4):
        cache.store(p64(n), p64(1), None, bytes(10))
    assert cache.load(p64(1)) is not None  # now most recently used
    cache.store(p64(4), p64(1), None, bytes(10))
    assert cache.load(p64(2)) is None
    assert cache.load(p64(1)) is not None
    assert cache.total_size <= size
    assert cache.evictions == 1


def test_records_larger_than_the_cache_are_not_kept() -> None:
    cache = ClientCache(100)
    cache.store(OID, p64(1), None, bytes(200))
    assert len(cache) == 0


def test_last_tid_never_moves_backwards_while_holding_data() -> None:
    cache = ClientCache()
    cache.set_last_tid(p64(5))
    cache.store(OID, p64(5), None, b"x")
    with pytest.raises(ValueError, match="before"):
        cache.set_last_tid(p64(4))
    cache.clear()
    assert cache.get_last_tid() == p64(5)  # clearing drops data only
    cache.set_last_tid(p64(4))  # nothing cached: the server's word stands
    assert cache.get_last_tid() == p64(4)
    cache.set_last_tid(z64)
    assert cache.get_last_tid() == z64


def test_clear_drops_the_records_and_keeps_the_last_tid() -> None:
    cache = ClientCache()
    cache.store(OID, p64(3), p64(5), b"old")
    cache.store(OID, p64(5), None, b"new")
    cache.set_last_tid(p64(6))
    cache.clear()
    assert len(cache) == 0
    assert cache.load(OID) is None
    assert cache.load_before(OID, p64(5)) is None
    assert cache.get_last_tid() == p64(6)


# A model: the full history of each object, as a server would know it.
events = st.lists(
    st.tuples(
        st.sampled_from(["commit", "load", "evict"]),
        st.integers(1, 3),  # oid
        st.integers(0, 30),  # tid offset for loads
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(events, st.integers(1, 6))
def test_cache_answers_like_the_history_it_was_shown(
    script: list[tuple[str, int, int]], capacity: int
) -> None:
    cache = ClientCache(capacity * (RECORD_OVERHEAD + 8))
    history: dict[int, list[tuple[int, bytes]]] = {}  # oid -> [(tid, data)]
    tid = 1

    def server_load_before(oid: int, before: int) -> tuple[bytes, int, int | None]:
        revisions = history.get(oid, [])
        older = [(t, d) for t, d in revisions if t < before]
        t, d = older[-1]
        later = [t2 for t2, _ in revisions if t2 > t]
        return d, t, (later[0] if later else None)

    for action, oid, offset in script:
        if action == "commit":
            tid += 1
            data = p64(tid)
            history.setdefault(oid, []).append((tid, data))
            cache.invalidate(p64(oid), p64(tid))
            cache.store(p64(oid), p64(tid), None, data)
            cache.set_last_tid(p64(tid))
        elif action == "load" and oid in history:
            before = min(history[oid][0][0] + 1 + offset, tid + 1)
            expected = server_load_before(oid, before)
            hit = cache.load_before(p64(oid), p64(before))
            if hit is None:
                data, start, end = expected
                cache.store(
                    p64(oid), p64(start), None if end is None else p64(end), data
                )
            else:
                data, start, end = hit
                assert (data, start, end) == (
                    expected[0],
                    p64(expected[1]),
                    None if expected[2] is None else p64(expected[2]),
                )
        elif action == "evict":
            cache.invalidate(p64(oid), None)


saved_records = st.lists(
    st.builds(
        lambda oid, start, gap, current, size: CacheRecord(
            p64(oid), p64(start), None if current else p64(start + gap), bytes(size)
        ),
        st.integers(1, 4),
        st.integers(1, 20),
        st.integers(1, 5),
        st.booleans(),
        st.integers(0, 40),
    ),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(saved_records, st.integers(1, 8))
def test_restore_is_storing_each_saved_record_in_turn(
    saved: list[CacheRecord], capacity: int
) -> None:
    """Whatever a cache file holds (duplicates, two current records of one
    object, records too big to keep), restoring it leaves the cache as
    storing its records one by one would."""
    size = capacity * (RECORD_OVERHEAD + 16)
    restored, stored = ClientCache(size), ClientCache(size)
    restored.restore(p64(99), [CacheRecord(*vars_of(r)) for r in saved])
    for record in saved:
        stored.store(*vars_of(record))
    assert [vars_of(r) for r in restored.records()] == [
        vars_of(r) for r in stored.records()
    ]
    assert restored.total_size == stored.total_size
    assert restored.get_last_tid() == p64(99)
    for oid in range(1, 5):
        for before in range(1, 30):
            assert restored.load_before(p64(oid), p64(before)) == stored.load_before(
                p64(oid), p64(before)
            )


def vars_of(record: CacheRecord) -> tuple[bytes, bytes, bytes | None, bytes]:
    return record.oid, record.start, record.end, record.data
