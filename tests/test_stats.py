"""Means, Student-t intervals and paired differences against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from reports.stats import mean_ci, paired_difference


def test_one_value_has_a_mean_and_no_interval():
    interval = mean_ci([0.25])
    assert interval.mean == 0.25 and interval.n == 1
    assert math.isnan(interval.low) and math.isnan(interval.high)
    assert not interval.excludes_zero


def test_two_values_already_have_an_interval():
    interval = mean_ci([0.1, 0.3])
    half = 12.706204736 * math.sqrt(0.02) / math.sqrt(2)  # t(0.975, 1 df) * sd / sqrt(n)
    assert interval.mean == pytest.approx(0.2) and interval.n == 2
    assert (interval.low, interval.high) == pytest.approx((0.2 - half, 0.2 + half))


def test_missing_and_non_finite_values_are_left_out():
    assert mean_ci([0.1, math.nan, None, math.inf, 0.3]) == mean_ci([0.1, 0.3])
    empty = mean_ci([math.nan])
    assert empty.n == 0 and all(math.isnan(v) for v in (empty.mean, empty.low, empty.high))


def test_three_seeds_of_a_clear_gain_exclude_zero():
    interval = mean_ci([0.05, 0.06, 0.07])
    assert interval.low == pytest.approx(0.06 - 4.302652730 * 0.01 / math.sqrt(3))
    assert interval.excludes_zero and not mean_ci([-0.05, 0.06, 0.07]).excludes_zero


def test_paired_difference_uses_only_the_seeds_both_arms_have():
    a = {0: 0.30, 1: 0.32, 2: 0.50}
    b = {0: 0.20, 1: 0.21, 3: 0.90}
    difference = paired_difference(a, b)
    assert difference.n == 2 and difference.mean == pytest.approx(0.105)


def test_an_interval_that_reaches_a_bound_exactly_is_not_cut():
    free = mean_ci([0.1, 0.3, 0.35])
    exact = mean_ci([0.1, 0.3, 0.35], bounds=(free.low, free.high))
    assert (exact.low, exact.high, exact.clipped) == (free.low, free.high, False)


def test_an_interval_past_one_bound_is_cut_on_that_side_only():
    free = mean_ci([0.1, 0.3, 0.35])
    below = mean_ci([0.1, 0.3, 0.35], bounds=(free.low + 0.01, 1.0))
    assert (below.low, below.high, below.clipped) == (free.low + 0.01, free.high, True)
    above = mean_ci([0.1, 0.3, 0.35], bounds=(-1.0, free.high - 0.01))
    assert (above.low, above.high, above.clipped) == (free.low, free.high - 0.01, True)
