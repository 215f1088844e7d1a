"""The bench's p99-difference interval (edge.bench.measure.percentile_difference_ci)."""

from __future__ import annotations

import numpy as np

from edge.bench.measure import STEADY_SKIP, Timing, median_ci, percentile, percentile_difference_ci


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


def test_paced_bare_counts_the_wait_behind_a_stalled_call(tmp_path) -> None:
    """A call that overruns its slot delays the next one; the paced reference must count that wait
    (response time from the scheduled instant), as the station's next part carries it."""
    import time

    from tiny_models import make_classifier

    from edge.bench.bare import BareSession
    from edge.model_spec import resolve_spec
    from edge.settings import ModelSettings

    model = make_classifier(tmp_path / "tiny.onnx", classes=3)
    settings = ModelSettings(path=str(model), labels=["a", "b", "c"], intra_op_threads=1)
    bare = BareSession(model, settings, resolve_spec(model, settings))
    real_run = bare.session.run
    calls = 0

    def run(*args, **kwargs):  # the real session; the second call also stalls 60 ms (a host stall)
        nonlocal calls
        calls += 1
        if calls == 2:
            time.sleep(0.060)
        return real_run(*args, **kwargs)

    bare.session.run = run  # type: ignore[method-assign]
    x = [np.zeros((1, 3, 8, 8), np.float32)]
    t = bare.paced(x, 4, rate_hz=50.0)  # due at 0, 20, 40, 60 ms
    assert len(t.latencies_ms) == len(t.call_ms) == 4
    assert t.call_ms[1] >= 60.0 and t.latencies_ms[1] >= t.call_ms[1]
    # call 2 was due at 40 ms and could start only after call 1 ended (>= 80 ms): >= 40 ms of wait
    assert t.latencies_ms[2] - t.call_ms[2] >= 40.0 - 0.5
    assert all(lat >= call for lat, call in zip(t.latencies_ms, t.call_ms))


def test_median_interval_brackets_the_median_and_narrows_with_more_rounds() -> None:
    rng = np.random.default_rng(3)
    few, many = rng.normal(0.97, 0.18, 9), rng.normal(0.97, 0.18, 900)
    lo9, hi9 = median_ci(few)
    lo90, hi90 = median_ci(many)
    assert lo9 <= np.median(few) <= hi9 and lo90 <= np.median(many) <= hi90
    assert (hi90 - lo90) < 0.5 * (hi9 - lo9)  # ~1/sqrt(100) narrower
    assert median_ci([1.0, 1.0, 1.0]) == [1.0, 1.0] and median_ci([0.9]) == [None, None]


def test_steady_window_leaves_the_fill_out() -> None:
    # 40 items: 0.1 s to the STEADY_SKIP-th completion (the fill), then 38 in 0.38 s
    t = Timing(40, 0.48, 0.5, steady_s=0.38, steady_n=40 - STEADY_SKIP)
    assert t.ms_per_item == 12.0 and t.steady_ms_per_item == 10.0
    assert Timing(2, 0.02, 0.02).steady_ms_per_item == 10.0  # too short for a window: the whole block
