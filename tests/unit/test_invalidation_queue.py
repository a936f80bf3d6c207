"""The recent-commits queue behind getInvalidations."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from ZODB.utils import p64

from zodbserver.server.invalidations import InvalidationQueue


def tid(n: int) -> bytes:
    return p64(n)


def test_answers_for_tids_the_queue_covers() -> None:
    queue = InvalidationQueue(3, tid(10))
    queue.append(tid(11), [b"a"])
    queue.append(tid(12), [b"b", b"c"])
    assert queue.since(tid(12)) == (tid(12), [])
    latest, oids = queue.since(tid(10)) or (None, [])
    assert latest == tid(12)
    assert sorted(oids) == [b"a", b"b", b"c"]
    latest, oids = queue.since(tid(11)) or (None, [])
    assert sorted(oids) == [b"b", b"c"]


def test_cannot_vouch_for_tids_older_than_the_queue() -> None:
    queue = InvalidationQueue(2, tid(10))
    for n in range(11, 15):
        queue.append(tid(n), [p64(n)])
    assert queue.since(tid(9)) is None
    assert queue.since(tid(12)) is None  # only 13 and 14 are kept
    assert queue.since(tid(13)) == (tid(14), [p64(14)])


class StorageWithHistory:
    def lastInvalidations(self, count: int) -> list[tuple[bytes, list[bytes]]]:
        return [(tid(n), [p64(n)]) for n in range(1, 6)][-count:]


def test_seeded_from_the_storage_history() -> None:
    queue = InvalidationQueue.from_storage(3, StorageWithHistory(), tid(5))
    assert queue.latest_tid == tid(5)
    latest, oids = queue.since(tid(3)) or (None, [])
    assert latest == tid(5)
    assert sorted(oids) == [p64(4), p64(5)]
    assert queue.since(tid(2)) is None


@given(
    size=st.integers(1, 8),
    commits=st.lists(st.sets(st.integers(0, 20), max_size=4), max_size=20),
    asked=st.integers(0, 25),
)
def test_matches_a_full_history(size: int, commits: list[set[int]], asked: int) -> None:
    queue = InvalidationQueue(size, tid(0))
    for number, oids in enumerate(commits, 1):
        queue.append(tid(number), [p64(o) for o in oids])
    answer = queue.since(tid(asked))
    if answer is None:
        # Refused only when the queue lost commits after the asked tid.
        oldest_kept = len(commits) - size + 1
        assert asked < oldest_kept
        return
    latest, oids = answer
    assert latest == tid(len(commits))
    expected = set().union(*commits[asked:]) if asked < len(commits) else set()
    assert sorted(oids) == sorted(p64(o) for o in expected)
