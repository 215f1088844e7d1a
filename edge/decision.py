"""Probabilities -> verdict.

A part passes only if its top-1 class is one of the configured pass classes and that class's
probability is at or above the minimum (per-class minimum if configured). Everything else fails:
with the defect class as the reason, or ``uncertain`` when a pass class won without enough
confidence. Failing on doubt is deliberate: a false reject costs a re-check, a defect escape
costs a customer complaint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.settings import DecisionSettings

UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class Verdict:
    """Outcome for one part.

    passed: True = good part. label: top-1 class name. probability: its probability in [0, 1].
    reason: ``""`` for a pass, else the defect class or ``"uncertain"``.
    """

    passed: bool
    label: str
    probability: float
    reason: str


class DecisionError(ValueError):
    """The decision settings do not fit the model's labels."""


def check_decision_settings(settings: DecisionSettings, labels: Sequence[str]) -> None:
    """Raise :class:`DecisionError` if a pass class or per-class minimum names an unknown label."""
    known = set(labels)
    missing = [c for c in settings.pass_classes if c not in known]
    if missing:
        raise DecisionError(
            f"decision.pass_classes = {list(settings.pass_classes)}: {missing} not among the model's labels {list(labels)}"
        )
    bad = [c for c in settings.class_min_probability if c not in known]
    if bad:
        raise DecisionError(
            f"decision.class_min_probability: {bad} not among the model's labels {list(labels)}"
        )


def decide(probs: np.ndarray, labels: Sequence[str], settings: DecisionSettings) -> Verdict:
    """Turn one row of class probabilities ``[C] float32`` into a :class:`Verdict`."""
    top = int(np.argmax(probs))
    label = labels[top]
    p = float(probs[top])
    if label in settings.pass_classes:
        need = settings.class_min_probability.get(label, settings.min_pass_probability)
        if p >= need:
            return Verdict(True, label, p, "")
        return Verdict(False, label, p, UNCERTAIN)
    return Verdict(False, label, p, label)
