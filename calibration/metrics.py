"""Classification metrics a QC engineer reads: top-1, per-class recall, confusion matrix, defect
escape rate and false reject rate.

Definitions (the same as the model cards in ../shared/models):

- *defect escape*: an image whose true class is a defect (not a pass class) predicted as any
  pass class; escape rate = escapes / defective images.
- *false reject*: an image whose true class is a pass class predicted as any defect class;
  false reject rate = false rejects / pass images.
- *agreement*: share of images where two models predict the same top-1 class.

Rates are percentages (0..100). Pure numpy, no model is run here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassMetrics:
    """Metrics of one model on one labelled image set.

    Attributes:
        labels: class names, index order of the model output.
        pass_labels: the labels that mean "good part".
        confusion: ``[C,C] int64``, rows = true class, columns = predicted class.
    """

    labels: tuple[str, ...]
    pass_labels: tuple[str, ...]
    confusion: np.ndarray

    @property
    def images(self) -> int:
        return int(self.confusion.sum())

    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion))

    @property
    def top1(self) -> float:
        """Top-1 accuracy in % (0 when there are no images)."""
        return 100.0 * self.correct / self.images if self.images else 0.0

    def _pass_mask(self) -> np.ndarray:
        return np.array([lab in self.pass_labels for lab in self.labels], dtype=bool)

    @property
    def defective(self) -> int:
        return int(self.confusion[~self._pass_mask()].sum())

    @property
    def good(self) -> int:
        return int(self.confusion[self._pass_mask()].sum())

    @property
    def escapes(self) -> int:
        pm = self._pass_mask()
        return int(self.confusion[np.ix_(~pm, pm)].sum())

    @property
    def false_rejects(self) -> int:
        pm = self._pass_mask()
        return int(self.confusion[np.ix_(pm, ~pm)].sum())

    @property
    def escape_rate(self) -> float:
        """Defect escape rate in % of defective images (0 when there are none)."""
        return 100.0 * self.escapes / self.defective if self.defective else 0.0

    @property
    def false_reject_rate(self) -> float:
        """False reject rate in % of pass-class images (0 when there are none)."""
        return 100.0 * self.false_rejects / self.good if self.good else 0.0

    def recall(self) -> dict[str, tuple[int, int]]:
        """Per class: ``(correct, images)`` for every class with at least one image."""
        out: dict[str, tuple[int, int]] = {}
        for i, lab in enumerate(self.labels):
            n = int(self.confusion[i].sum())
            if n:
                out[lab] = (int(self.confusion[i, i]), n)
        return out

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary (rates rounded to 0.01 %)."""
        return {
            "images": self.images,
            "correct": self.correct,
            "top1": round(self.top1, 4),
            "escapes": self.escapes,
            "defective": self.defective,
            "escape_rate": round(self.escape_rate, 4),
            "false_rejects": self.false_rejects,
            "good": self.good,
            "false_reject_rate": round(self.false_reject_rate, 4),
            "recall": {k: {"correct": c, "images": n, "recall": round(100.0 * c / n, 4)}
                       for k, (c, n) in self.recall().items()},
            "confusion": self.confusion.tolist(),
        }


def compute_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    labels: Sequence[str],
    pass_labels: Sequence[str],
) -> ClassMetrics:
    """Build :class:`ClassMetrics` from true and predicted class indices.

    Args:
        y_true / y_pred: ``[N] int`` class indices into ``labels``.
        labels: class names (``C``).
        pass_labels: labels that mean "good part" (subset of ``labels``).

    Raises:
        ValueError: lengths differ, an index is out of range, or a pass label is unknown.
    """
    yt = np.asarray(y_true, dtype=np.int64).reshape(-1)
    yp = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    c = len(labels)
    if yt.shape != yp.shape:
        raise ValueError(f"y_true has {yt.size} entries, y_pred {yp.size}; expected the same number")
    for name, arr in (("y_true", yt), ("y_pred", yp)):
        if arr.size and (arr.min() < 0 or arr.max() >= c):
            raise ValueError(f"{name} has class index {int(arr.min())}..{int(arr.max())}, expected 0..{c - 1}")
    unknown = [p for p in pass_labels if p not in labels]
    if unknown:
        raise ValueError(f"pass class(es) {unknown} are not model labels {list(labels)}")
    conf = np.zeros((c, c), dtype=np.int64)
    np.add.at(conf, (yt, yp), 1)
    return ClassMetrics(tuple(labels), tuple(pass_labels), conf)


def agreement(pred_a: Sequence[int] | np.ndarray, pred_b: Sequence[int] | np.ndarray) -> float:
    """Top-1 agreement of two prediction vectors in % (100 for empty input)."""
    a = np.asarray(pred_a).reshape(-1)
    b = np.asarray(pred_b).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"prediction vectors have {a.size} and {b.size} entries; expected the same number")
    return 100.0 * float((a == b).mean()) if a.size else 100.0
