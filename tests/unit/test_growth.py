"""bench/growth.py: the growth class a scale figure gets from its three points."""

from __future__ import annotations

import pytest

from bench.growth import classify_growth

LEVELS = [1_000, 10_000, 100_000]


@pytest.mark.parametrize(("ys", "growth"), [
    ([5.0, 5.3, 4.9], "flat"),  # noise around one value is not a slope
    ([1.0, 2.0, 3.0], "log"),  # + a constant per decade
    ([1.0, 10.0, 100.0], "linear"),  # proportional to the work
    ([10.0, 19.0, 109.0], "linear"),
    ([2.98, 3.93, 1.85], "flat"),  # ends lower than it began: no growth, however noisy
])
def test_growth_is_the_simplest_model_that_fits(ys, growth):
    assert classify_growth(LEVELS, ys)["growth"] == growth


def test_growth_of_unusable_points_is_not_guessed():
    assert classify_growth(LEVELS, [1.0, float("nan"), 2.0])["growth"] == "n/a"
    assert classify_growth([1_000], [1.0])["growth"] == "n/a"


def test_the_spread_of_a_median_narrows_with_more_pairs_not_with_a_looser_target():
    from bench.run import median_spread

    assert median_spread([1.0, 1.1, 0.9, 1.0, 1.2]) == pytest.approx((1.2 - 0.9) / 1.0)  # 5: min..max
    fifteen = [1.0] * 11 + [0.5, 0.6, 1.5, 1.6]  # two outliers each side
    assert median_spread(fifteen) == pytest.approx(0.0)  # ranks 3..13 of 15 leave them out
    assert median_spread([1.0]) != median_spread([1.0])  # nan: one value has no spread
