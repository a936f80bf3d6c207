"""The tests' shared polling helpers (tests/support/waiting.py)."""

from __future__ import annotations

import itertools
import time

import pytest

from support.waiting import read_until, wait_until


def test_wait_until_returns_once_the_predicate_turns_true() -> None:
    calls = itertools.count(1)
    assert wait_until(lambda: next(calls) >= 3, "the third call") is True
    assert next(calls) == 4


def test_wait_until_returns_the_predicates_truthy_value() -> None:
    answers = iter([None, "", {"connections": 1}])
    seen = wait_until(lambda: next(answers), "a status")
    assert seen == {"connections": 1}


def test_wait_until_times_out_naming_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError) as raised:
        wait_until(lambda: False, "the invalidation", timeout=0.1, interval=0.01)
    assert str(raised.value) == "timed out after 0.1s waiting for the invalidation"
    assert 0.1 <= time.monotonic() - started < 5


def test_read_until_returns_the_reading_done_holds_for() -> None:
    readings = iter([(500, b""), (404, b""), (200, b"blue"), (200, b"red")])
    seen = read_until(lambda: next(readings), lambda seen: seen[0] == 200)
    assert seen == (200, b"blue")


def test_read_until_returns_the_last_reading_on_timeout() -> None:
    calls = itertools.count(1)
    last = read_until(lambda: next(calls), lambda n: n < 0, timeout=0.05)
    assert last >= 2
    assert next(calls) == last + 1


def test_read_until_reads_once_with_no_time_left() -> None:
    calls = itertools.count(1)
    assert read_until(lambda: next(calls), lambda n: False, timeout=0) == 1
