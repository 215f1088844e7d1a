"""Metrics (escapes, false rejects, recall) and the accuracy gate with exact numbers."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.gate import GateThresholds, check_gate
from calibration.metrics import agreement, compute_metrics

LABELS = ("crack", "free", "dent")
PASS = ("free",)


def _metrics(y: list[int], p: list[int]):
    return compute_metrics(np.array(y), np.array(p), LABELS, PASS)


def test_metrics_exact_counts() -> None:
    # 4 crack, 4 free, 2 dent
    y = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    p = [0, 0, 1, 2, 1, 1, 1, 0, 2, 1]
    m = _metrics(y, p)
    assert m.images == 10 and m.correct == 6 and m.top1 == pytest.approx(60.0)
    assert (m.escapes, m.defective) == (2, 6)  # crack->free, dent->free
    assert m.escape_rate == pytest.approx(100 * 2 / 6)
    assert (m.false_rejects, m.good) == (1, 4)
    assert m.false_reject_rate == pytest.approx(25.0)
    assert m.recall() == {"crack": (2, 4), "free": (3, 4), "dent": (1, 2)}
    assert m.confusion.tolist() == [[2, 1, 1], [1, 3, 0], [0, 1, 1]]
    assert m.to_dict()["recall"]["crack"] == {"correct": 2, "images": 4, "recall": 50.0}


def test_metrics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match=r"class index 0..3, expected 0..2"):
        compute_metrics([0, 3], [0, 0], LABELS, PASS)
    with pytest.raises(ValueError, match=r"pass class\(es\) \['ok'\] are not model labels"):
        compute_metrics([0], [0], LABELS, ["ok"])
    assert agreement([1, 2, 3, 4], [1, 2, 0, 4]) == pytest.approx(75.0)


Y = [0] * 10 + [1] * 10  # 10 crack (defective), 10 free


def test_gate_refuses_top1_drop_with_numbers() -> None:
    fp32 = _metrics(Y, Y)  # 100 %
    int8 = _metrics(Y, [0] * 10 + [1] * 8 + [0] * 2)  # 2 false rejects: 90 %, no escapes
    g = check_gate(fp32, int8, GateThresholds(max_top1_drop=1.0), agreement=90.0)
    assert not g.passed and not g.top1_ok and g.escapes_ok
    assert g.top1_drop == pytest.approx(10.0) and g.shortfall == pytest.approx(9.0)
    assert g.message() == (
        "val (20 images): top-1 FP32 100.00 % -> INT8 90.00 % (drop +10.00 pp, over 1.00 allowed); defect escapes "
        "0/10 -> 0/10 (+0.00 pp, ok 0.00 allowed); false rejects 0/10 -> 2/10; agreement 90.00 %: REFUSED")
    assert check_gate(fp32, int8, GateThresholds(max_top1_drop=10.0)).passed


def test_gate_refuses_one_added_escape_by_default() -> None:
    fp32 = _metrics(Y, [0] * 9 + [1] + [1] * 10)  # 1 escape
    int8 = _metrics(Y, [0] * 8 + [1, 1] + [1] * 10)  # 2 escapes, top-1 drop 5 pp
    g = check_gate(fp32, int8, GateThresholds(max_top1_drop=5.0))
    assert g.top1_ok and not g.escapes_ok and not g.passed
    assert g.escape_rise == pytest.approx(10.0)
    assert "defect escapes 1/10 -> 2/10 (+10.00 pp, over 0.00 allowed)" in g.message()
    assert check_gate(fp32, int8, GateThresholds(5.0, 10.0)).passed
    d = g.to_dict()
    assert (d["escapes_fp32"], d["escapes_int8"], d["passed"]) == (1, 2, False)


def test_gate_passes_equal_and_better_models() -> None:
    fp32 = _metrics(Y, [0] * 9 + [1] + [1] * 10)
    assert check_gate(fp32, fp32).passed
    better = _metrics(Y, Y)
    g = check_gate(fp32, better)
    assert g.passed and g.top1_drop == pytest.approx(-5.0) and g.escape_rise == pytest.approx(-10.0)


def test_thresholds_validated_and_same_images_required() -> None:
    with pytest.raises(ValueError, match="max_top1_drop = -1"):
        GateThresholds(max_top1_drop=-1)
    with pytest.raises(ValueError, match="same images"):
        check_gate(_metrics(Y, Y), _metrics([0, 1], [0, 1]))
