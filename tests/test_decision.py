from __future__ import annotations

import numpy as np
import pytest

from edge.decision import DecisionError, Verdict, check_decision_settings, decide
from edge.settings import DecisionSettings

LABELS = ("blowhole", "break", "crack", "fray", "free", "uneven")


def test_pass_when_pass_class_is_top1_and_confident() -> None:
    v = decide(np.array([0.05, 0.05, 0.0, 0.0, 0.9, 0.0], np.float32), LABELS, DecisionSettings())
    assert v == Verdict(True, "free", pytest.approx(0.9), "")


def test_fail_with_defect_class_as_reason() -> None:
    v = decide(np.array([0.0, 0.0, 0.97, 0.0, 0.03, 0.0], np.float32), LABELS, DecisionSettings())
    assert (v.passed, v.label, v.reason) == (False, "crack", "crack")


def test_uncertain_pass_fails() -> None:
    s = DecisionSettings(min_pass_probability=0.8)
    v = decide(np.array([0.1, 0.1, 0.0, 0.0, 0.7, 0.1], np.float32), LABELS, s)
    assert (v.passed, v.label, v.reason) == (False, "free", "uncertain")


def test_per_class_minimum_overrides_global() -> None:
    s = DecisionSettings(min_pass_probability=0.8, class_min_probability={"free": 0.6})
    v = decide(np.array([0.1, 0.1, 0.0, 0.0, 0.7, 0.1], np.float32), LABELS, s)
    assert v.passed


def test_unknown_pass_class_is_a_clear_error() -> None:
    with pytest.raises(DecisionError, match=r"decision.pass_classes.*'good'.*not among"):
        check_decision_settings(DecisionSettings(pass_classes=["good"]), LABELS)
