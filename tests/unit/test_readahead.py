"""Readahead bookkeeping: which siblings a cache miss proposes to prefetch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import transaction
import ZODB
from hypothesis import given, settings
from hypothesis import strategies as st
from persistent.mapping import PersistentMapping
from ZODB.MappingStorage import MappingStorage
from ZODB.serialize import referencesf
from ZODB.utils import p64

from zodbserver.client.readahead import (
    BINPERSID,
    FIRST_WINDOW,
    MAX_MARKS,
    MAX_PARENTS,
    Readahead,
)


class Records:
    """Real ZODB records: containers of new children, committed to memory."""

    def __init__(self) -> None:
        self.db = ZODB.DB(MappingStorage())
        self.children: list[bytes] = []

    def container(self, count: int) -> bytes:
        """The record of a container of ``count`` new children; their oids
        are appended to ``self.children`` in the record's order."""
        with self.db.transaction() as conn:
            container = PersistentMapping()
            for index in range(count):
                container[index] = PersistentMapping()
            conn.root()[len(conn.root())] = container
            conn.add(container)
        self.children += [child._p_oid for child in container.values()]
        data: bytes = self.db.storage.load(container._p_oid)[0]
        return data


@pytest.fixture
def records() -> Iterator[Records]:
    made = Records()
    yield made
    made.db.close()
    transaction.abort()


def test_first_miss_prefetches_nothing_second_a_window(records: Records) -> None:
    readahead = Readahead(max_window=512)
    readahead.loaded(b"parent00", records.container(200))
    children = records.children
    assert readahead.missed(children[0]) == []
    assert readahead.missed(children[1]) == children[2 : 2 + FIRST_WINDOW]


def test_windows_double_and_do_not_repeat(records: Records) -> None:
    readahead = Readahead(max_window=512)
    readahead.loaded(b"parent00", records.container(200))
    children = records.children
    readahead.missed(children[0])
    first = readahead.missed(children[1])
    end = 2 + FIRST_WINDOW
    second = readahead.missed(children[end])
    assert second == children[end + 1 : end + 1 + 2 * FIRST_WINDOW]
    assert not set(first) & set(second)
    # A miss inside what was already requested proposes only what is new.
    again = readahead.missed(children[end + 1])
    assert not set(again) & set(second)


def test_reaching_a_windows_first_sibling_proposes_the_next_window(
    records: Records,
) -> None:
    readahead = Readahead(max_window=512)
    readahead.loaded(b"parent00", records.container(200))
    children = records.children
    readahead.missed(children[0])
    end = 2 + FIRST_WINDOW
    assert readahead.missed(children[1]) == children[2:end]
    assert readahead.reached(children[3]) == []  # not the mark
    # Reached from the cache, the mark asks for more as a miss would have.
    following = readahead.reached(children[2])
    assert following == children[end : 3 + 2 * FIRST_WINDOW]
    assert readahead.reached(children[2]) == []  # a mark is used once
    assert list(readahead.marks) == [children[end]]


def test_a_miss_on_the_mark_uses_it_up(records: Records) -> None:
    readahead = Readahead(max_window=512)
    readahead.loaded(b"parent00", records.container(200))
    children = records.children
    readahead.missed(children[0])
    readahead.missed(children[1])
    assert readahead.missed(children[2])  # arrived too late: a miss
    assert children[2] not in readahead.marks
    assert readahead.reached(children[2]) == []


def test_marks_are_bounded(records: Records) -> None:
    readahead = Readahead(max_window=512)
    for index in range(MAX_MARKS + 5):
        readahead.loaded(p64(index), records.container(8))
        first, second = records.children[-8:-6]
        readahead.missed(first)
        readahead.missed(second)
    assert len(readahead.marks) == MAX_MARKS
    newest = records.children[-6]
    assert list(readahead.marks)[-1] == newest


def test_window_is_capped(records: Records) -> None:
    readahead = Readahead(max_window=4)
    readahead.loaded(b"parent00", records.container(200))
    readahead.missed(records.children[0])
    for index in (1, 10, 20, 30):
        assert 0 < len(readahead.missed(records.children[index])) <= 4


def test_disabled_few_references_or_garbage_do_nothing(records: Records) -> None:
    off = Readahead(max_window=0)
    off.loaded(b"parent00", records.container(200))
    assert off.missed(records.children[0]) == off.missed(records.children[1]) == []

    readahead = Readahead(max_window=512)
    readahead.loaded(b"parent01", records.container(2))
    readahead.loaded(b"parent02", b"not a pickle at all")
    few = records.children[-2:]
    assert readahead.missed(few[0]) == readahead.missed(few[1]) == []


def test_least_recently_used_parents_are_forgotten(records: Records) -> None:
    readahead = Readahead(max_window=512)
    readahead.loaded(b"oldest00", records.container(8))
    oldest = list(records.children)
    for index in range(MAX_PARENTS):
        readahead.loaded(p64(index), records.container(4))
    assert readahead.missed(oldest[0]) == readahead.missed(oldest[1]) == []
    newest = records.children[-4:]  # the newest parent is still known
    readahead.missed(newest[0])
    assert readahead.missed(newest[1]) == newest[2:]


def test_a_new_revision_of_a_parent_replaces_its_children(records: Records) -> None:
    readahead = Readahead(max_window=512)
    readahead.loaded(b"parent00", records.container(50))
    readahead.loaded(b"parent00", records.container(50))
    before, after = records.children[:50], records.children[50:]
    assert readahead.missed(before[0]) == readahead.missed(before[1]) == []
    readahead.missed(after[0])
    assert readahead.missed(after[1])[0] == after[2]


@settings(max_examples=60, deadline=None)
@given(
    children=st.integers(min_value=0, max_value=12),
    payloads=st.lists(st.binary(max_size=300), max_size=4),
)
def test_the_opcode_count_never_hides_a_reference(
    children: int, payloads: list[bytes]
) -> None:
    """Readahead skips parsing a record with fewer ``BINPERSID`` bytes than
    it needs references; every reference ZODB writes has one, whatever the
    plain data beside it holds."""
    db = ZODB.DB(MappingStorage())
    try:
        with db.transaction() as conn:
            record = PersistentMapping({f"p{i}": p for i, p in enumerate(payloads)})
            for index in range(children):
                record[index] = PersistentMapping()
            conn.root()["record"] = record
            conn.add(record)
        data = db.storage.load(record._p_oid)[0]
        assert data.count(BINPERSID) >= len(referencesf(data)) == children
    finally:
        db.close()
