"""The accuracy gate: may this INT8 model replace the FP32 one?

Refuses when INT8 top-1 drops more than ``max_top1_drop`` percentage points below FP32, or when
the defect escape rate rises more than ``max_escape_rise`` points above FP32's (issue 3;
defaults 1.0 and 0.0: at most 1 pp of top-1, no added escapes). Both models are judged on the
same images, so an escape-rate rise of 0 pp means the same number of escapes.
"""

from __future__ import annotations

from dataclasses import dataclass

from calibration.metrics import ClassMetrics

_EPS = 1e-9


@dataclass(frozen=True)
class GateThresholds:
    """``max_top1_drop``: allowed top-1 drop in pp (default 1.0); ``max_escape_rise``: allowed
    defect-escape-rate rise in pp (default 0.0)."""

    max_top1_drop: float = 1.0
    max_escape_rise: float = 0.0

    def __post_init__(self) -> None:
        for name in ("max_top1_drop", "max_escape_rise"):
            v = getattr(self, name)
            if not (v >= 0.0):
                raise ValueError(f"{name} = {v}, expected a number of percentage points >= 0")


@dataclass(frozen=True)
class GateResult:
    """Outcome of :func:`check_gate` on one image set (``part``: "val", "select", "confirm")."""

    part: str
    fp32: ClassMetrics
    int8: ClassMetrics
    thresholds: GateThresholds
    agreement: float

    @property
    def top1_drop(self) -> float:
        """FP32 top-1 minus INT8 top-1, in pp (negative = INT8 better)."""
        return self.fp32.top1 - self.int8.top1

    @property
    def escape_rise(self) -> float:
        """INT8 escape rate minus FP32 escape rate, in pp."""
        return self.int8.escape_rate - self.fp32.escape_rate

    @property
    def top1_ok(self) -> bool:
        return self.top1_drop <= self.thresholds.max_top1_drop + _EPS

    @property
    def escapes_ok(self) -> bool:
        return self.escape_rise <= self.thresholds.max_escape_rise + _EPS

    @property
    def passed(self) -> bool:
        return self.top1_ok and self.escapes_ok

    @property
    def shortfall(self) -> float:
        """How far the gate is missed, in pp (0 when it passes): the sum of both excesses."""
        return (max(0.0, self.top1_drop - self.thresholds.max_top1_drop)
                + max(0.0, self.escape_rise - self.thresholds.max_escape_rise))

    def message(self) -> str:
        """One line with the numbers, e.g. ``val (268 images): top-1 FP32 94.78 % -> INT8 89.55 %
        (drop 5.22 pp > 1.00 allowed); escapes 6/78 -> 7/78 (+1.28 pp > 0.00 allowed): REFUSED``."""
        f, q, t = self.fp32, self.int8, self.thresholds
        top = (f"top-1 FP32 {f.top1:.2f} % -> INT8 {q.top1:.2f} % (drop {self.top1_drop:+.2f} pp, "
               f"{'ok' if self.top1_ok else 'over'} {t.max_top1_drop:.2f} allowed)")
        esc = (f"defect escapes {f.escapes}/{f.defective} -> {q.escapes}/{q.defective} "
               f"({self.escape_rise:+.2f} pp, {'ok' if self.escapes_ok else 'over'} {t.max_escape_rise:.2f} allowed)")
        fr = f"false rejects {f.false_rejects}/{f.good} -> {q.false_rejects}/{q.good}"
        verdict = "PASSED" if self.passed else "REFUSED"
        return (f"{self.part} ({f.images} images): {top}; {esc}; {fr}; agreement {self.agreement:.2f} %: "
                f"{verdict}")

    def to_dict(self) -> dict[str, object]:
        return {
            "part": self.part,
            "images": self.fp32.images,
            "passed": self.passed,
            "top1_fp32": round(self.fp32.top1, 4),
            "top1_int8": round(self.int8.top1, 4),
            "top1_drop_pp": round(self.top1_drop, 4),
            "escapes_fp32": self.fp32.escapes,
            "escapes_int8": self.int8.escapes,
            "defective": self.fp32.defective,
            "escape_rise_pp": round(self.escape_rise, 4),
            "false_rejects_fp32": self.fp32.false_rejects,
            "false_rejects_int8": self.int8.false_rejects,
            "good": self.fp32.good,
            "agreement": round(self.agreement, 4),
            "thresholds": {"max_top1_drop": self.thresholds.max_top1_drop,
                           "max_escape_rise": self.thresholds.max_escape_rise},
        }


def check_gate(
    fp32: ClassMetrics,
    int8: ClassMetrics,
    thresholds: GateThresholds | None = None,
    *,
    agreement: float = 100.0,
    part: str = "val",
) -> GateResult:
    """Judge ``int8`` against ``fp32`` (metrics on the same images).

    Raises:
        ValueError: the two metrics are not over the same number of images or labels.
    """
    if fp32.labels != int8.labels or fp32.images != int8.images:
        raise ValueError(f"gate needs both models on the same images: FP32 {fp32.images} images "
                         f"{list(fp32.labels)}, INT8 {int8.images} images {list(int8.labels)}")
    return GateResult(part, fp32, int8, thresholds or GateThresholds(), agreement)
