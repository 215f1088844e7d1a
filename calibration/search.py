"""Accuracy-aware layer selection: the pure parts (split, greedy loop), no model is run here.

The idea is NNCF's ``quantize_with_accuracy_control``, done with the quantizer's own exclusion
list: rank the quantized layers by a cheap proxy (``calibration.sensitivity``), then walk the
ranking and exclude one layer at a time from quantization, keeping an exclusion only when the
task metric on the *selection* part of the labelled folder improves, until the gate passes or a
limit on float layers is reached. The result is judged on the *confirm* part and the whole
folder, which the choice never saw (issue 8).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


class SplitError(ValueError):
    """The labelled folder is too small to split into a selection and a confirm part."""


def stratified_split(
    y: Sequence[int] | np.ndarray,
    labels: Sequence[str],
    *,
    min_per_class: int = 4,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split image indices into two halves with the same class mix.

    Each class's images are shuffled (``numpy.random.default_rng(seed)``) and dealt alternately
    to the selection and the confirm part (an odd one goes to confirm). Classes without images
    are ignored.

    Args:
        y: ``[N] int`` true class index per image.
        labels: class names, for the error message.
        min_per_class: a class with 1..min_per_class-1 images is an error.

    Returns:
        ``(select_idx, confirm_idx)``, sorted ``int64`` index arrays.

    Raises:
        SplitError: some class has fewer than ``min_per_class`` images (all are named).
    """
    yy = np.asarray(y, dtype=np.int64)
    counts = np.bincount(yy, minlength=len(labels)) if yy.size else np.zeros(len(labels), np.int64)
    small = [(labels[i], int(n)) for i, n in enumerate(counts) if 0 < n < min_per_class]
    if small:
        desc = ", ".join(f"{lab} ({n})" for lab, n in small)
        raise SplitError(f"labelled folder too small to split into a selection and a confirm part: class(es) "
                         f"{desc} have fewer than {min_per_class} images (--min-per-class); add images or "
                         f"lower the minimum")
    if yy.size < 2:
        raise SplitError(f"labelled folder has {yy.size} image(s); at least 2 are needed to split")
    rng = np.random.default_rng(seed)
    sel: list[int] = []
    conf: list[int] = []
    for c in range(len(labels)):
        idx = np.flatnonzero(yy == c)
        rng.shuffle(idx)
        conf.extend(idx[0::2].tolist())
        sel.extend(idx[1::2].tolist())
    return np.array(sorted(sel), dtype=np.int64), np.array(sorted(conf), dtype=np.int64)


@dataclass(frozen=True)
class Score:
    """What one candidate exclusion set achieved on the selection part.

    ``passed``: the gate passes; ``shortfall``: pp by which it misses (0 when passed);
    ``agreement``: top-1 agreement with FP32 in % (tie-break). ``detail`` is free-form (numbers
    for the report)."""

    passed: bool
    shortfall: float
    agreement: float
    detail: dict[str, object] = field(default_factory=dict)

    def better_than(self, other: Score, eps: float = 1e-9) -> bool:
        """Lower shortfall wins; at equal shortfall, higher agreement with FP32 wins."""
        if self.shortfall < other.shortfall - eps:
            return True
        return abs(self.shortfall - other.shortfall) <= eps and self.agreement > other.agreement + eps


@dataclass(frozen=True)
class Trial:
    """One step of the greedy walk: the candidate layer, its score, and whether it was kept."""

    node: str
    score: Score
    accepted: bool


@dataclass(frozen=True)
class SearchResult:
    """Layers kept in float (in the order they were accepted), the start and end scores, every trial,
    and why the walk stopped (``"gate passed"``, ``"float layer limit"``, ``"trial limit"``,
    ``"ranking exhausted"``)."""

    excluded: tuple[str, ...]
    initial: Score
    final: Score
    trials: tuple[Trial, ...]
    stopped: str


def greedy_exclude(
    ranking: Sequence[str],
    evaluate: Callable[[tuple[str, ...]], Score],
    *,
    start: Sequence[str] = (),
    max_float_layers: int = 8,
    max_trials: int = 24,
    on_trial: Callable[[Trial], None] | None = None,
) -> SearchResult:
    """Walk ``ranking`` (worst layer first) and exclude layers from quantization greedily.

    ``evaluate(excluded)`` scores a model quantized with ``excluded`` kept in float (on the
    selection part). A candidate is kept when it makes the score better (:meth:`Score.better_than`),
    otherwise reverted; the walk stops when the gate passes, when ``max_float_layers`` layers
    are excluded (``start`` counts), after ``max_trials`` evaluations, or at the end of the ranking.

    Raises:
        ValueError: ``max_float_layers`` or ``max_trials`` < 0.
    """
    if max_float_layers < 0 or max_trials < 0:
        raise ValueError(f"max_float_layers = {max_float_layers}, max_trials = {max_trials}; expected >= 0")
    excluded = tuple(start)
    current = evaluate(excluded)
    initial = current
    trials: list[Trial] = []
    stopped = "ranking exhausted"
    for node in ranking:
        if current.passed:
            stopped = "gate passed"
            break
        if len(excluded) >= max_float_layers:
            stopped = "float layer limit"
            break
        if len(trials) >= max_trials:
            stopped = "trial limit"
            break
        if node in excluded:
            continue
        score = evaluate(excluded + (node,))
        ok = score.better_than(current)
        trial = Trial(node, score, ok)
        trials.append(trial)
        if on_trial is not None:
            on_trial(trial)
        if ok:
            excluded += (node,)
            current = score
    else:
        if current.passed:
            stopped = "gate passed"
    return SearchResult(excluded, initial, current, tuple(trials), stopped)
