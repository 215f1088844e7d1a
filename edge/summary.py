"""Run summary: counts, throughput, latency percentiles and, on a labelled replay, accuracy.

Definitions (as in the shared model cards): top-1 accuracy = predicted label == true label;
defect escape rate = defective parts (true label not a pass class) that got a *pass* verdict /
all defective parts; false reject rate = good parts (true label a pass class) that got a *fail*
verdict / all good parts. Escape and false reject are counted on verdicts, i.e. what the PLC was
told; with ``decision.min_pass_probability = 0`` they equal the cards' argmax figures. A
fail-safe answer with its image counts (a good part rejected fail-safe is a false reject). Left out,
and listed under the rates: fail-safe answers given before a frame was taken (no image, no true
label) and images under folders that are not model labels (``ok/``, ``good/``: no truth to compare).

The capture counters (``summary["capture"]``, :func:`capture_summary`) come from the frame
source (:attr:`edge.capture.FrameSource.stats`): ``frames`` handed out, ``corrupt`` image files
skipped, ``reconnects`` (reopen attempts), ``dropped_stale`` (live frames replaced unused).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.result import InspectionResult

_MAX_SAMPLES = 100_000  # latency samples kept (bounded memory on a months-long run)
CAPTURE_COUNTERS = ("frames", "corrupt", "reconnects", "dropped_stale")


def capture_summary(source: Any) -> dict[str, Any]:
    """``{"replay": bool, "frames": int, "corrupt": int, "reconnects": int, "dropped_stale": int}``
    from a frame source (its ``stats`` survive ``close()``); counters it lacks are 0."""
    try:
        st = dict(source.stats)
    except Exception:  # noqa: BLE001 - a summary must not fail because one component did
        st = {}
    out: dict[str, Any] = {"replay": bool(getattr(source, "is_replay", False))}
    out.update({k: int(st.get(k, 0) or 0) for k in CAPTURE_COUNTERS})
    return out


class RunSummary:
    def __init__(self, pass_classes: Sequence[str]) -> None:
        self.pass_classes = set(pass_classes)
        self._lock = threading.Lock()
        self.t_start = time.monotonic()
        self.t_last: float | None = None
        self.parts = 0
        self.passes = 0
        self.rejects: Counter[str] = Counter()
        self.failsafe: Counter[str] = Counter()
        self.lat_total: deque[float] = deque(maxlen=_MAX_SAMPLES)
        self.lat_plc: deque[float] = deque(maxlen=_MAX_SAMPLES)
        self.confusion: Counter[tuple[str, str]] = Counter()
        self.truth_good = self.truth_bad = self.false_rejects = self.escapes = 0
        # replayed parts the rates cannot count: a fail-safe answer given before a frame was
        # taken (no image, so no true label), and images under a folder that is not a model label
        self.failsafe_unlabelled = 0
        self.truth_not_a_label: Counter[str] = Counter()

    def add(self, r: InspectionResult) -> None:
        with self._lock:
            self.parts += 1
            self.t_last = time.monotonic()
            if r.verdict.passed:
                self.passes += 1
            else:
                self.rejects[r.verdict.reason] += 1
            if r.failsafe:
                self.failsafe[r.failsafe] += 1
            if "total" in r.latency_ms:
                self.lat_total.append(r.latency_ms["total"])
            if "plc" in r.latency_ms:
                self.lat_plc.append(r.latency_ms["plc"])
            if r.truth is not None and r.labels and r.truth not in r.labels:
                self.truth_not_a_label[r.truth] += 1
            elif r.truth is not None:
                self.confusion[(r.truth, r.verdict.label if not r.failsafe else r.failsafe)] += 1
                if r.truth in self.pass_classes:
                    self.truth_good += 1
                    self.false_rejects += int(not r.verdict.passed)
                else:
                    self.truth_bad += 1
                    self.escapes += int(r.verdict.passed)
            elif r.failsafe:
                self.failsafe_unlabelled += 1

    def parts_per_min(self, window_s: float | None = None) -> float:
        el = (self.t_last or time.monotonic()) - self.t_start
        return 60.0 * self.parts / el if el > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            el = ((self.t_last or time.monotonic()) - self.t_start) or 1e-9

            def pct(xs: deque[float]) -> dict[str, float] | None:
                if not xs:
                    return None
                a = np.fromiter(xs, dtype=np.float64)
                return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
                        "max": round(float(a.max()), 3)}

            out: dict[str, Any] = {
                "parts": self.parts,
                "passes": self.passes,
                "rejects": sum(self.rejects.values()),
                "rejects_by_reason": dict(self.rejects),
                "failsafe_by_cause": dict(self.failsafe),
                "throughput_parts_per_s": round(self.parts / el, 3),
                "latency_ms_total": pct(self.lat_total),
                "latency_ms_trigger_to_telegram": pct(self.lat_plc),
            }
            n = self.truth_good + self.truth_bad
            if n:
                correct = sum(c for (t, p), c in self.confusion.items() if t == p)
                out["ground_truth"] = {
                    "images": n,
                    "top1_correct": correct,
                    "top1_accuracy": round(correct / n, 6),
                    "good_parts": self.truth_good,
                    "defective_parts": self.truth_bad,
                    "false_rejects": self.false_rejects,
                    "false_reject_rate": round(self.false_rejects / self.truth_good, 6) if self.truth_good else None,
                    "defect_escapes": self.escapes,
                    "defect_escape_rate": round(self.escapes / self.truth_bad, 6) if self.truth_bad else None,
                    # top-1 misses that are neither: a defective part rejected under another label
                    "rejected_as_another_defect": sum(c for (t, p), c in self.confusion.items()
                                                      if t != p and t not in self.pass_classes
                                                      and p not in self.pass_classes),
                    "confusion": {f"{t}->{p}": c for (t, p), c in sorted(self.confusion.items())},
                }
            if n or self.truth_not_a_label:
                out.setdefault("ground_truth", {"images": 0})
                out["ground_truth"]["failsafe_without_image"] = self.failsafe_unlabelled
                out["ground_truth"]["folders_not_labels"] = dict(self.truth_not_a_label)
            return out


def format_summary(d: dict[str, Any]) -> str:
    """Human-readable summary for the console."""
    lines = [
        (f"parts {d['parts']}  passes {d['passes']}  rejects {d['rejects']}  "
         f"throughput {d['throughput_parts_per_s']:.2f} parts/s"),
    ]
    if d["rejects_by_reason"]:
        lines.append("rejects by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(d["rejects_by_reason"].items())))
    if d["failsafe_by_cause"]:
        lines.append("fail-safe answers: " + ", ".join(f"{k} {v}" for k, v in sorted(d["failsafe_by_cause"].items())))
    cap = d.get("capture")
    if cap:
        shown = [f"{k} {cap.get(k, 0)}" for k in CAPTURE_COUNTERS
                 if cap.get(k) or (k == "corrupt" and cap.get("replay"))]
        if shown:
            line = "capture: " + ", ".join(shown)
            lines.append(line + (" (unreadable image files skipped; the log names each)" if cap.get("corrupt") else ""))
    plc = d.get("plc_link")
    if plc:
        line = (f"PLC link: {plc['telegrams_sent']} telegrams sent ({plc.get('heartbeats_sent', 0)} heartbeats), "
                f"{plc['dropped_results']} RES not sent, "
                f"{plc['write_errors']} write errors, {plc['naks_sent']} bad PLC telegrams (NAK), {plc['reconnects']} reconnects")
        other = int(plc.get("dropped", 0) or 0) - int(plc["dropped_results"] or 0)
        if other > 0:
            line += f", {other} other telegrams dropped (PONG/NAK/HBT: the log says why)"
        lines.append(line if not plc["dropped_results"] else line + "  <-- parts without an answer at the PLC")
    for key, name in (("latency_ms_trigger_to_telegram", "trigger->telegram"), ("latency_ms_total", "trigger->decision")):
        if d.get(key):
            v = d[key]
            lines.append(f"latency {name}: p50 {v['p50']:.1f} ms  p99 {v['p99']:.1f} ms  max {v['max']:.1f} ms")
    gt = d.get("ground_truth")
    if gt and gt.get("images"):
        fr = gt["false_reject_rate"]
        es = gt["defect_escape_rate"]
        other = gt.get("rejected_as_another_defect") or 0
        lines.append(
            f"ground truth ({gt['images']} labelled images): top-1 {100 * gt['top1_accuracy']:.2f} % "
            f"({gt['top1_correct']}/{gt['images']})"
            + (f"; {other} defective part{'s' if other != 1 else ''} rejected under another label "
               "(a wrong class, still rejected)" if other else "")
        )
        if fr is not None:
            lines.append(f"  false reject rate {100 * fr:.2f} % ({gt['false_rejects']}/{gt['good_parts']})")
        if es is not None:
            lines.append(f"  defect escape rate {100 * es:.2f} % ({gt['defect_escapes']}/{gt['defective_parts']})")
    if gt and not gt.get("images"):
        lines.append("ground truth: no image under a folder named like a model label, no rates")
    if gt and gt.get("failsafe_without_image"):
        lines.append(f"  not in these rates: {gt['failsafe_without_image']} fail-safe answers given before a frame "
                     "was taken (no image, no true label; all rejected at the PLC)")
    if gt and gt.get("folders_not_labels"):
        folders = ", ".join(f"{k} ({v})" for k, v in sorted(gt["folders_not_labels"].items()))
        lines.append(f"  not in these rates: images under folders that are not model labels: {folders}")
    return "\n".join(lines)
