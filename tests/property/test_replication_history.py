"""Properties of replication histories: they survive their JSON form;
nothing but ``ConfigurationError`` comes out of reading junk; and
``compare`` tells a follower, a stale primary and a diverged history
apart the way promotions make them."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from ZODB.utils import p64

from zodbserver.errors import ConfigurationError
from zodbserver.server.replication_history import (
    FIRST_HISTORY,
    History,
    Verdict,
    compare,
    from_json,
    promoted,
    to_json,
)

tids = st.integers(min_value=1, max_value=2**62).map(p64)


@st.composite
def histories(draw: st.DrawFn) -> History:
    history = FIRST_HISTORY
    for after in sorted(draw(st.lists(tids, max_size=5))):
        history = promoted(history, after)
    return history


@given(histories())
def test_json_round_trip(history: History) -> None:
    assert from_json(to_json(history), "test") == history


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=20,
)


@given(json_values)
def test_junk_raises_only_configuration_error(value: Any) -> None:
    outcome = _read(value)
    if isinstance(outcome, ConfigurationError):
        assert str(outcome).startswith("junk: ")
    else:
        assert outcome[0] == FIRST_HISTORY[0]


def _read(value: Any) -> History | ConfigurationError:
    try:
        return from_json(value, "junk")
    except ConfigurationError as error:
        return error


@given(histories(), tids, tids)
def test_a_replica_behind_its_primary_follows(
    history: History, first: bytes, second: bytes
) -> None:
    replica_last = min(first, second)
    assert compare(history, history, replica_last).verdict is Verdict.FOLLOW


@given(histories(), tids, tids)
def test_a_promotion_leaves_the_old_primary_diverged_or_behind(
    history: History, promoted_at: bytes, old_last: bytes
) -> None:
    if promoted_at < history[-1].begins_after:
        promoted_at = history[-1].begins_after
    new = promoted(history, promoted_at)
    comparison = compare(new, history, old_last)
    if old_last > promoted_at:
        assert comparison.verdict is Verdict.DIVERGED
        assert comparison.branch == promoted_at
    else:
        assert comparison.verdict is Verdict.FOLLOW
    # The other way round, the new primary will not follow the old one.
    assert compare(history, new, promoted_at).verdict is Verdict.PRIMARY_STALE


@given(histories(), tids, tids, tids)
def test_two_promotions_from_one_epoch_diverge_at_the_earlier(
    history: History, first: bytes, second: bytes, last: bytes
) -> None:
    base = history[-1].begins_after
    first, second = max(first, base), max(second, base)
    if first == second:
        return
    one, other = promoted(history, first), promoted(history, second)
    comparison = compare(one, other, last)
    if last > min(first, second):
        assert comparison == (
            comparison.__class__(Verdict.DIVERGED, min(first, second))
        )
    else:
        assert comparison.verdict is Verdict.FOLLOW
