"""Quantize, gate, and (``--accuracy-aware``) keep the costliest layers in float until the gate passes.

Steps (issue 8):

1. Quantize every layer; evaluate FP32 and INT8 on the labelled folder; gate on the whole folder.
2. If the gate refuses and the search is on: split the folder by class into a *selection* and a
   *confirm* half (:func:`calibration.search.stratified_split`); rank the quantized layers by
   local output SQNR on calibration images (:mod:`calibration.sensitivity`); walk the ranking,
   excluding one layer at a time from quantization (ONNX Runtime ``nodes_to_exclude``) and keeping
   it only if the gate's shortfall (then the agreement with FP32) improves on the *selection*
   half (:func:`calibration.search.greedy_exclude`).
3. Write the chosen model and judge it on the *confirm* half and the whole folder, which the
   choice never saw; it passes only if both pass.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.calibrate import QdqModel, Ranges, load_calibration_rows, write_qdq_model
from calibration.dataset import Preprocessed, preprocess_folder, scan_labelled
from calibration.evaluate import Evaluation, ModelResult, OrtClassifier
from calibration.gate import GateResult, GateThresholds, check_gate
from calibration.metrics import agreement, compute_metrics
from calibration.search import Score, SearchResult, Trial, greedy_exclude, stratified_split
from calibration.sensitivity import LayerSensitivity, rank_layers
from edge.model_spec import ModelSpec

log = logging.getLogger("edgeqc.calibration")


@dataclass(frozen=True)
class SearchOptions:
    """Accuracy-aware search limits.

    Attributes:
        max_float_layers: most layers left in float (default 8).
        max_trials: most candidate models evaluated (default 24).
        min_per_class: a class with fewer labelled images cannot be split (default 4).
        seed: seed of the stratified split.
        proxy_images: calibration images for the SQNR ranking (default 32).
        proxy_batch: images per inference call of the ranking (default 4; bounds memory).
    """

    max_float_layers: int = 8
    max_trials: int = 24
    min_per_class: int = 4
    seed: int = 0
    proxy_images: int = 32
    proxy_batch: int = 4


@dataclass
class LabelledSet:
    """A labelled folder decoded and preprocessed once: ``x`` rows match ``y`` and ``files``."""

    folder: Path
    labels: tuple[str, ...]
    pass_labels: tuple[str, ...]
    files: list[Path]
    skipped: list[Path]
    y: np.ndarray
    data: Preprocessed

    @property
    def x(self) -> np.ndarray:
        return self.data.array

    def close(self) -> None:
        self.data.close()


def load_labelled(folder: str | Path, spec: ModelSpec, pass_labels: Sequence[str], *,
                  progress: bool = False) -> LabelledSet:
    """Scan and preprocess a labelled folder (corrupt images skipped and counted).

    Raises:
        calibration.dataset.DatasetError: see :func:`calibration.dataset.scan_labelled`.
        ValueError: a pass label is not a model label, or no image is readable.
    """
    unknown = [p for p in pass_labels if p not in spec.labels]
    if unknown:
        raise ValueError(f"pass class(es) {unknown} are not model labels {list(spec.labels)}; set --pass-class "
                         "(or decision.pass_classes in the config)")
    lf = scan_labelled(folder, spec.labels)
    data = preprocess_folder(lf.files, spec, progress=progress, desc="labelled images")
    if not len(data):
        data.close()
        raise ValueError(f"{folder}: none of the {len(lf.files)} images could be read")
    pos = {p: i for i, p in enumerate(lf.files)}
    y = lf.y[[pos[p] for p in data.files]]
    return LabelledSet(Path(folder), spec.labels, tuple(pass_labels), list(data.files), list(data.skipped), y, data)


def gate_on(
    part: str, idx: np.ndarray | None, val: LabelledSet, fp32_pred: np.ndarray, int8_pred: np.ndarray,
    thresholds: GateThresholds,
) -> GateResult:
    """Gate INT8 vs FP32 predictions on the images ``idx`` of ``val`` (all when None).
    ``int8_pred`` is aligned with ``idx``; ``fp32_pred`` covers the whole set."""
    sel = np.arange(len(val.y)) if idx is None else idx
    y = val.y[sel]
    f = compute_metrics(y, fp32_pred[sel], val.labels, val.pass_labels)
    q = compute_metrics(y, int8_pred, val.labels, val.pass_labels)
    return check_gate(f, q, thresholds, agreement=agreement(fp32_pred[sel], int8_pred), part=part)


@dataclass
class GatedModel:
    """Outcome of :func:`quantize_and_gate`.

    Attributes:
        qdq: the written Q/DQ model (final choice).
        passed: the gate passed (whole folder; and confirm half after a search).
        gates: final gate results by part ("val", and "select"/"confirm" after a search).
        plain_gates: gate results of the model with every layer quantized (same parts).
        evaluation: FP32 vs final INT8 on the whole folder (for the table / JSON).
        ranking: proxy ranking (empty without a search).
        search: the greedy walk (None without a search).
        seconds: time per phase.
    """

    qdq: QdqModel
    passed: bool
    gates: dict[str, GateResult]
    plain_gates: dict[str, GateResult]
    evaluation: Evaluation
    ranking: list[LayerSensitivity] = field(default_factory=list)
    search: SearchResult | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready record for the report and the engine sidecar."""
        out: dict[str, Any] = {
            "passed": self.passed,
            "gate_before": {k: g.to_dict() for k, g in self.plain_gates.items()},
            "gate_after": {k: g.to_dict() for k, g in self.gates.items()},
            "excluded_nodes": list(self.qdq.excluded),
            "precision": self.qdq.stats.to_dict(),
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }
        if self.search is not None:
            out["search"] = {
                "ranking_proxy": "local per-layer output SQNR (dB) of INT8 vs FP32 on calibration images",
                "ranking": [r.to_dict() for r in self.ranking],
                "trials": [{"node": t.node, "accepted": t.accepted, "shortfall_pp": round(t.score.shortfall, 4),
                            "agreement": round(t.score.agreement, 4), **t.score.detail} for t in self.search.trials],
                "stopped": self.search.stopped,
            }
        return out


def make_evaluation(val: LabelledSet, fp32_pred: np.ndarray, int8_pred: np.ndarray, fp32_path: Path,
                    int8_path: Path) -> Evaluation:
    """FP32 vs INT8 :class:`~calibration.evaluate.Evaluation` from predictions on ``val``."""
    ev = Evaluation(val.folder, val.labels, val.pass_labels, val.files, val.skipped, val.y)
    for name, path, pred in (("FP32", fp32_path, fp32_pred), ("INT8", int8_path, int8_pred)):
        ev.models.append(ModelResult(name, path, pred, compute_metrics(val.y, pred, val.labels, val.pass_labels)))
    return ev


def quantize_and_gate(
    fp32_path: str | Path,
    ranges: Ranges,
    spec: ModelSpec,
    val: LabelledSet,
    out_path: str | Path,
    *,
    thresholds: GateThresholds,
    accuracy_aware: bool = False,
    options: SearchOptions | None = None,
    exclude: Sequence[str] = (),
    threads: int = 0,
    provenance: Mapping[str, Any] | None = None,
    on_trial: Callable[[Trial], None] | None = None,
) -> GatedModel:
    """Quantize ``fp32_path`` (``exclude`` kept in float), gate it on ``val``, and search when asked.

    The model at ``out_path`` is the final choice whether or not it passed (the caller decides
    what to do with a refusal); it always passes the Q/DQ graph checks.

    Raises:
        calibration.search.SplitError: the search needs a split and a class is too small.
        calibration.qdq_check.QdqGraphError: a written graph breaks a Q/DQ rule.
    """
    opts = options or SearchOptions()
    fp32_path = Path(fp32_path)
    out_path = Path(out_path)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    fp32_pred = OrtClassifier(fp32_path, spec, threads=threads).predict_all(val.x)
    seconds["fp32_eval"] = time.perf_counter() - t0

    split = stratified_split(val.y, val.labels, min_per_class=opts.min_per_class, seed=opts.seed) \
        if accuracy_aware else None

    def gates_for(pred: np.ndarray) -> dict[str, GateResult]:
        g = {"val": gate_on("val", None, val, fp32_pred, pred, thresholds)}
        if split is not None:
            g["select"] = gate_on("select", split[0], val, fp32_pred, pred[split[0]], thresholds)
            g["confirm"] = gate_on("confirm", split[1], val, fp32_pred, pred[split[1]], thresholds)
        return g

    base_prov = dict(provenance or {})
    t0 = time.perf_counter()
    plain = write_qdq_model(fp32_path, ranges, out_path, spec, exclude=exclude,
                            provenance=base_prov | {"accuracy_aware": False})
    plain_pred = OrtClassifier(plain.path, spec, threads=threads).predict_all(val.x)
    plain_gates = gates_for(plain_pred)
    seconds["quantize_eval"] = time.perf_counter() - t0
    log.info("plain INT8: %s", plain_gates["val"].message())
    if not accuracy_aware or (plain_gates["val"].passed and (split is None or plain_gates["confirm"].passed)):
        passed = plain_gates["val"].passed and (split is None or plain_gates["confirm"].passed)
        return GatedModel(plain, passed, plain_gates, plain_gates,
                          make_evaluation(val, fp32_pred, plain_pred, fp32_path, plain.path), seconds=seconds)

    assert split is not None
    sel_idx = split[0]
    t0 = time.perf_counter()
    calib = load_calibration_rows(ranges, spec, opts.proxy_images)
    batches = list(calib.batches(opts.proxy_batch))
    ranking = rank_layers(fp32_path, plain.path, batches, input_name=spec.input_name, threads=threads)
    seconds["ranking"] = time.perf_counter() - t0
    log.info("ranking (local SQNR, worst first): %s",
             ", ".join(f"{r.name} {r.sqnr_db:.1f} dB" for r in ranking[:5]))

    t0 = time.perf_counter()
    sel_x = np.ascontiguousarray(val.x[sel_idx])
    with tempfile.TemporaryDirectory(prefix=".edgeqc-search-", dir=out_path.parent) as tmp:
        cand_path = Path(tmp) / "candidate.int8.onnx"

        def evaluate(excluded: tuple[str, ...]) -> Score:
            if not excluded[len(exclude):]:
                pred = plain_pred[sel_idx]
            else:
                q = write_qdq_model(fp32_path, ranges, cand_path, spec, exclude=excluded)
                pred = OrtClassifier(q.path, spec, threads=threads).predict_all(sel_x)
            g = gate_on("select", sel_idx, val, fp32_pred, pred, thresholds)
            return Score(g.passed, g.shortfall, g.agreement,
                         {"top1_int8": round(g.int8.top1, 4), "escapes_int8": g.int8.escapes,
                          "false_rejects_int8": g.int8.false_rejects})

        result = greedy_exclude([r.name for r in ranking if r.name not in exclude], evaluate,
                                start=tuple(exclude), max_float_layers=opts.max_float_layers + len(exclude),
                                max_trials=opts.max_trials, on_trial=on_trial)
    seconds["search"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    prov = base_prov | {"accuracy_aware": True, "excluded": list(result.excluded),
                        "gate_before": {k: g.to_dict() for k, g in plain_gates.items()}}
    final = write_qdq_model(fp32_path, ranges, out_path, spec, exclude=result.excluded, provenance=prov)
    final_pred = OrtClassifier(final.path, spec, threads=threads).predict_all(val.x)
    gates = gates_for(final_pred)
    seconds["final_eval"] = time.perf_counter() - t0
    passed = gates["val"].passed and gates["confirm"].passed
    return GatedModel(final, passed, gates, plain_gates,
                      make_evaluation(val, fp32_pred, final_pred, fp32_path, final.path), ranking, result, seconds)

