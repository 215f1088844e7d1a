"""``edgeqc evaluate``: FP32 and INT8 models on a labelled folder, side by side.

Every model runs through ONNX Runtime (CPU) on the same images with the same preprocessing
(:func:`edge.preprocess.preprocess`); images are decoded once and streamed in batches, so memory
does not grow with the folder. Reported per model: top-1, per-class recall, confusion matrix,
defect escape rate, false reject rate (:mod:`calibration.metrics`), and the top-1 agreement of
each further model with the first one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.dataset import LabelledFolder, scan_labelled
from calibration.metrics import ClassMetrics, agreement, compute_metrics
from edge.frames import read_image
from edge.model_spec import ModelSpec
from edge.preprocess import Preprocessor


class OrtClassifier:
    """ONNX Runtime CPU session that returns top-1 class indices for ``[N,3,H,W] float32`` batches."""

    def __init__(self, path: str | Path, spec: ModelSpec, *, threads: int = 0) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        shape = self.session.get_inputs()[0].shape
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``[N,3,H,W] float32`` -> ``[N] int64`` argmax of the output (logits or probabilities)."""
        if self.fixed_batch is None or self.fixed_batch == x.shape[0]:
            return np.asarray(self.session.run(None, {self.input_name: x})[0]).argmax(axis=1)
        b = self.fixed_batch
        out = []
        for s in range(0, x.shape[0], b):
            part = x[s:s + b]
            n = part.shape[0]
            if n < b:  # pad the last partial batch of a fixed-batch model
                part = np.concatenate([part, np.repeat(part[-1:], b - n, axis=0)])
            out.append(np.asarray(self.session.run(None, {self.input_name: part})[0])[:n].argmax(axis=1))
        return np.concatenate(out)

    def predict_all(self, x: np.ndarray, batch: int = 16) -> np.ndarray:
        """Predict ``x`` (``[N,3,H,W]``, may be a memmap) in batches of ``batch``."""
        parts = [self.predict(np.ascontiguousarray(x[s:s + batch])) for s in range(0, x.shape[0], batch)]
        return np.concatenate(parts) if parts else np.zeros((0,), np.int64)


@dataclass
class ModelResult:
    """One model's predictions and metrics on the folder."""

    name: str
    path: Path
    pred: np.ndarray
    metrics: ClassMetrics


@dataclass
class Evaluation:
    """Results of all models on one labelled folder (same images, same order)."""

    folder: Path
    labels: tuple[str, ...]
    pass_labels: tuple[str, ...]
    files: list[Path]
    skipped: list[Path]
    y: np.ndarray
    models: list[ModelResult] = field(default_factory=list)

    def agreement(self, a: int = 1, b: int = 0) -> float:
        return agreement(self.models[a].pred, self.models[b].pred)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "folder": str(self.folder), "labels": list(self.labels), "pass_classes": list(self.pass_labels),
            "images": len(self.files), "skipped": len(self.skipped),
            "skipped_files": [p.relative_to(self.folder).as_posix() for p in self.skipped],
            "models": {m.name: {"path": str(m.path)} | m.metrics.to_dict() for m in self.models},
        }
        if len(self.models) > 1:
            out["agreement"] = {f"{m.name} vs {self.models[0].name}": round(self.agreement(i, 0), 4)
                                for i, m in enumerate(self.models) if i}
        return out

    def format_table(self) -> str:
        return format_evaluation(self)


def iter_batches(
    files: Sequence[Path], spec: ModelSpec, batch: int, skipped: list[Path], progress: bool = False,
) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Decode + preprocess ``files`` in batches; yields ``([n,3,H,W] float32 view, file indices)``.
    Unreadable files are appended to ``skipped``."""
    from tqdm import tqdm

    pre = Preprocessor(spec, batch)
    frames: list[np.ndarray] = []
    idx: list[int] = []
    for i, p in enumerate(tqdm(files, desc="evaluate", unit="img", disable=None if progress else True, leave=False)):
        f = read_image(p, spec.channel_order)
        if f is None:
            skipped.append(p)
            continue
        frames.append(f)
        idx.append(i)
        if len(frames) == batch:
            yield pre.batch(frames), idx
            frames, idx = [], []
    if frames:
        yield pre.batch(frames), idx


def evaluate_folder(
    models: Sequence[tuple[str, str | Path]],
    folder: str | Path,
    spec: ModelSpec,
    pass_labels: Sequence[str],
    *,
    batch: int = 16,
    threads: int = 0,
    progress: bool = False,
) -> Evaluation:
    """Run every model on the labelled folder and compute the metrics.

    Args:
        models: ``(name, path)`` pairs, e.g. ``[("FP32", "m.onnx"), ("INT8", "m.int8.onnx")]``;
            agreement is reported against the first.
        folder: ``<folder>/<label>/**/<image>`` (see :func:`calibration.dataset.scan_labelled`).
        spec: model spec (labels and preprocessing), the same for every model.
        pass_labels: labels that mean "good part".

    Raises:
        calibration.dataset.DatasetError: missing/empty folder, unknown class folders.
        ValueError: no models, a pass label that is not a model label, or no readable image.
    """
    if not models:
        raise ValueError("evaluate needs at least one model")
    unknown = [p for p in pass_labels if p not in spec.labels]
    if unknown:
        raise ValueError(f"pass class(es) {unknown} are not model labels {list(spec.labels)}; set --pass-class "
                         "(or decision.pass_classes in the config)")
    lf: LabelledFolder = scan_labelled(folder, spec.labels)
    runners = [(name, OrtClassifier(path, spec, threads=threads)) for name, path in models]
    skipped: list[Path] = []
    used: list[int] = []
    preds: list[list[np.ndarray]] = [[] for _ in runners]
    for x, idx in iter_batches(lf.files, spec, batch, skipped, progress):
        used.extend(idx)
        for k, (_, r) in enumerate(runners):
            preds[k].append(r.predict(x))
    if not used:
        raise ValueError(f"{folder}: none of the {len(lf.files)} images could be read")
    y = lf.y[used]
    ev = Evaluation(Path(folder), spec.labels, tuple(pass_labels), [lf.files[i] for i in used], skipped, y)
    for (name, r), p in zip(runners, preds):
        pr = np.concatenate(p)
        ev.models.append(ModelResult(name, r.path, pr, compute_metrics(y, pr, spec.labels, pass_labels)))
    return ev


def _pct(n: int, d: int) -> str:
    return f"{100.0 * n / d:6.2f} % ({n}/{d})" if d else "     - (0/0)"


def format_evaluation(ev: Evaluation) -> str:
    """Human table: summary rows side by side, per-class recall, then one confusion matrix per model."""
    names = [m.name for m in ev.models]
    w = max(18, *(len(n) + 2 for n in names))
    lines = [(f"labelled folder: {ev.folder} ({len(ev.files)} images, {len(ev.skipped)} unreadable skipped; "
              f"pass class(es): {', '.join(ev.pass_labels)})")]
    head = f"{'':24}" + "".join(f"{n:>{w}}" for n in names)
    lines.append(head)
    rows = [
        ("top-1 accuracy", [_pct(m.metrics.correct, m.metrics.images) for m in ev.models]),
        ("defect escape rate", [_pct(m.metrics.escapes, m.metrics.defective) for m in ev.models]),
        ("false reject rate", [_pct(m.metrics.false_rejects, m.metrics.good) for m in ev.models]),
    ]
    if len(ev.models) > 1:
        rows.append((f"agreement vs {names[0]}",
                     ["-"] + [_pct(int((m.pred == ev.models[0].pred).sum()), len(ev.files)) for m in ev.models[1:]]))
    for label, vals in rows:
        lines.append(f"{label:24}" + "".join(f"{v:>{w}}" for v in vals))
    lines.append("recall per class")
    for i, lab in enumerate(ev.labels):
        n = int((ev.y == i).sum())
        if not n:
            continue
        vals = [_pct(int(m.metrics.confusion[i, i]), n) for m in ev.models]
        lines.append(f"  {lab:22}" + "".join(f"{v:>{w}}" for v in vals))
    for m in ev.models:
        lines.append(f"confusion matrix {m.name} (rows = true, columns = predicted)")
        cw = max(6, *(len(lab) + 1 for lab in ev.labels))
        lines.append(f"  {'':12}" + "".join(f"{lab:>{cw}}" for lab in ev.labels))
        for i, lab in enumerate(ev.labels):
            lines.append(f"  {lab:12}" + "".join(f"{int(v):>{cw}}" for v in m.metrics.confusion[i]))
    return "\n".join(lines)


def write_json(data: Any, target: str) -> None:
    """Write ``data`` as JSON to the file ``target``, or to stdout when ``target`` is ``-``."""
    text = json.dumps(data, indent=2, sort_keys=False)
    if target == "-":
        print(text)
    else:
        Path(target).write_text(text + "\n", encoding="utf-8")
