"""Accuracy-aware search, pure parts: greedy selection against a synthetic sensitivity, and the
stratified split."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.search import Score, SplitError, greedy_exclude, stratified_split

# Synthetic model: each quantized layer costs this many pp of top-1; the gate allows 1.0 pp.
COST = {"stem": 4.0, "head": 0.0, "mid": 1.5, "noisy": -0.5, "late": 0.4, "tail": 0.2}
# "noisy" *helps* when quantized (excluding it makes things worse): the task metric must reject it.


def _score(excluded: tuple[str, ...], calls: list[tuple[str, ...]] | None = None) -> Score:
    if calls is not None:
        calls.append(excluded)
    drop = sum(c for k, c in COST.items() if k not in excluded)
    shortfall = max(0.0, drop - 1.0)
    return Score(shortfall == 0.0, shortfall, 100.0 - drop, {"drop": drop})


def test_greedy_follows_ranking_keeps_only_improvements_and_stops_at_pass() -> None:
    calls: list[tuple[str, ...]] = []
    ranking = ["stem", "head", "noisy", "mid", "late", "tail"]  # proxy order, not perfect
    r = greedy_exclude(ranking, lambda ex: _score(ex, calls), max_float_layers=4, max_trials=10)
    # stem: 5.6 -> 1.6 pp kept; head: no change (same shortfall, same agreement) reverted;
    # noisy: worse, reverted; mid: 1.6 -> 0.1 pp, gate passes -> stop
    assert r.excluded == ("stem", "mid")
    assert [(t.node, t.accepted) for t in r.trials] == [("stem", True), ("head", False), ("noisy", False),
                                                       ("mid", True)]
    assert r.stopped == "gate passed" and r.final.passed and not r.initial.passed
    assert r.initial.detail["drop"] == pytest.approx(5.6) and r.final.detail["drop"] == pytest.approx(0.1)
    assert calls[0] == () and len(calls) == 5


def test_greedy_float_layer_limit_reports_best_attempt() -> None:
    r = greedy_exclude(["stem", "mid", "late"], _score, max_float_layers=1)
    assert r.excluded == ("stem",) and r.stopped == "float layer limit"
    assert not r.final.passed and r.final.shortfall == pytest.approx(0.6)


def test_greedy_trial_limit_and_exhausted_ranking() -> None:
    r = greedy_exclude(["noisy", "head", "stem"], _score, max_trials=2)
    assert r.excluded == () and r.stopped == "trial limit" and len(r.trials) == 2
    r = greedy_exclude(["late"], _score)
    assert r.excluded == ("late",) and r.stopped == "ranking exhausted" and not r.final.passed


def test_greedy_already_passing_tries_nothing() -> None:
    r = greedy_exclude(["stem"], _score, start=("stem", "mid"))
    assert r.excluded == ("stem", "mid") and r.trials == () and r.stopped == "gate passed"


def test_tie_break_on_agreement() -> None:
    a = Score(False, 1.0, 90.0)
    assert Score(False, 1.0, 91.0).better_than(a) and not Score(False, 1.0, 90.0).better_than(a)
    assert Score(False, 0.5, 10.0).better_than(a)


def test_stratified_split_keeps_class_mix_and_is_deterministic() -> None:
    y = np.array([0] * 23 + [1] * 17 + [2] * 6 + [3] * 190)
    sel, conf = stratified_split(y, ["a", "b", "c", "d"], min_per_class=4, seed=0)
    assert len(set(sel) & set(conf)) == 0 and len(sel) + len(conf) == len(y)
    assert np.bincount(y[sel]).tolist() == [11, 8, 3, 95]
    assert np.bincount(y[conf]).tolist() == [12, 9, 3, 95]
    sel2, conf2 = stratified_split(y, ["a", "b", "c", "d"], min_per_class=4, seed=0)
    assert sel.tolist() == sel2.tolist() and conf.tolist() == conf2.tolist()
    sel3, _ = stratified_split(y, ["a", "b", "c", "d"], min_per_class=4, seed=1)
    assert sel3.tolist() != sel.tolist()


def test_split_refuses_small_classes_and_ignores_empty_ones() -> None:
    y = np.array([0] * 10 + [1] * 3 + [2] * 2)
    with pytest.raises(SplitError, match=r"class\(es\) b \(3\), c \(2\) have fewer than 4 images"):
        stratified_split(y, ["a", "b", "c", "d"], min_per_class=4)
    sel, conf = stratified_split(np.array([0] * 4 + [2] * 4), ["a", "b", "c"], min_per_class=4)
    assert len(sel) == 4 and len(conf) == 4
