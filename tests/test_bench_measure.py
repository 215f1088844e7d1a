"""The bench's p99-difference interval (edge.bench.measure.percentile_difference_ci)."""

from __future__ import annotations

import numpy as np

from edge.bench.measure import percentile, percentile_difference_ci


def test_shifted_sample_gives_the_shift_and_an_interval_around_it() -> None:
    rng = np.random.default_rng(3)
    bare = rng.lognormal(2.2, 0.4, 3000)  # ms, heavy right tail like paced inference
    station = bare + 5.0
    r = percentile_difference_ci(station, bare, resamples=400)
    assert r["value"] == round(percentile(station, 99) - percentile(bare, 99), 3) == 5.0
    lo, hi = r["ci"]
    assert lo < 5.0 < hi and hi - lo > 0.5  # independent resampling of a tail: seconds apart it is not exact
    assert r["resamples"] == 400 and r["level"] == 0.90


def test_same_distribution_interval_straddles_zero_and_empty_gives_none() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.lognormal(2.2, 0.4, 2000), rng.lognormal(2.2, 0.4, 2000)
    lo, hi = percentile_difference_ci(a, b, resamples=400)["ci"]
    assert lo < 0.0 < hi
    assert percentile_difference_ci([], b) == {"value": None, "ci": [None, None], "level": 0.90, "resamples": 0}
