"""The benchmark's summary of runs: medians, ratios and paired ratios."""

from __future__ import annotations

import pytest
from bench.report import paired_ratio, summarize


def _runs(*values: float | None) -> list[dict[str, object]]:
    return [{"value": value, "extras": {}} for value in values]


def test_the_paired_ratio_is_the_median_of_each_rounds_ratio() -> None:
    summary = summarize(
        {"base": _runs(10, 30, 20), "candidate": _runs(4, 16, 12)}, "base"
    )
    candidate = summary["candidate"]
    assert candidate["ratio"] == pytest.approx(12 / 20)  # of the medians
    assert candidate["paired_ratio"] == pytest.approx(16 / 30)  # 0.4, 0.53, 0.6
    assert summary["base"]["ratio"] == summary["base"]["paired_ratio"] == 1.0


def test_a_failed_run_drops_its_round_only() -> None:
    assert paired_ratio([2.0, None, 6.0], [1.0, 1.0, 3.0]) == 2.0
    assert paired_ratio([2.0, 4.0], [None, 0.0]) is None
    assert paired_ratio([], []) is None


def test_rounds_pair_by_position() -> None:
    assert paired_ratio([1.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == 2.0
