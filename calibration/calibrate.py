"""``edgeqc calibrate`` as composable steps: calibration set -> ranges (cached) -> Q/DQ model -> checks.

1. :func:`prepare_ranges` — hash the model and the calibration set, look the ranges up in the
   cache; on a miss decode + preprocess the images once (corrupt ones skipped and counted),
   refuse a set below the minimum, run the calibrator (:mod:`calibration.ranges`), store.
2. :func:`write_qdq_model` — quantize with those ranges (:mod:`calibration.quantize`), then check
   the written graph (:mod:`calibration.qdq_check`) and count INT8 MACs (:mod:`calibration.graph_stats`).
3. :func:`calibration_report` — the JSON report (images used/skipped, method, per-tensor scales,
   hashes, cache hit, Q/DQ check, INT8 share).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.cache import RangeCache, cache_key
from calibration.dataset import DatasetError, Preprocessed, evenly_spaced, preprocess_folder, scan_images
from calibration.graph_stats import PrecisionStats, precision_stats
from calibration.qdq_check import QdqSummary, require_valid_qdq
from calibration.quantize import activation_scales, quantize_qdq
from calibration.ranges import CalibSettings, compute_ranges
from edge.model_spec import ModelSpec, spec_to_dict
from edge.onnx_info import file_sha256

log = logging.getLogger("edgeqc.calibration")

DEFAULT_MIN_IMAGES = 100
REPORT_SCHEMA = 1
_PREPROCESSING_KEYS = ("input_size", "resize", "interpolation", "channel_order", "scale", "mean", "std")


class CalibrationError(ValueError):
    """Calibration cannot run (too few usable images, bad settings); the message says why."""


@dataclass
class Ranges:
    """Activation ranges ready for quantization.

    ``path`` is ORT's calibration cache JSON; ``cache_hit`` says whether calibration inference
    was skipped. ``used`` / ``skipped`` are calibration image paths relative to the set's root.
    ``data`` holds the preprocessed images when they were decoded in this run (else None).
    """

    path: Path
    key: str
    cache_hit: bool
    method: str
    settings: CalibSettings
    model_sha256: str
    calib_sha256: str
    calib_root: Path
    found: int
    used: list[str]
    skipped: list[str]
    seconds: float
    data: Preprocessed | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    def close(self) -> None:
        if self.data is not None:
            self.data.close()
            self.data = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def prepare_ranges(
    model: str | Path,
    calib_dir: str | Path,
    spec: ModelSpec,
    settings: CalibSettings,
    *,
    min_images: int = DEFAULT_MIN_IMAGES,
    cache: RangeCache | None = None,
    progress: bool = False,
    keep_data: bool = False,
) -> Ranges:
    """Ranges for ``model`` on ``calib_dir``, from the cache when model, images and settings match.

    Args:
        model: FP32 ONNX model.
        calib_dir: calibration image folder (recursive).
        spec: the model spec (its preprocessing is part of the cache key).
        settings: calibration method etc.
        min_images: fewer usable images than this is an error (default 100; TensorRT's guidance
            is ~500).
        cache: where ranges are kept (``None`` or ``RangeCache(None)``: always recalibrate).
        keep_data: keep the preprocessed images (memmap) on the result for later use.

    Raises:
        DatasetError: the folder is missing or empty.
        CalibrationError: fewer than ``min_images`` usable images.
    """
    import onnxruntime

    t0 = time.perf_counter()
    cache = cache or RangeCache(None)
    if min_images < 1:
        raise CalibrationError(f"min_images = {min_images}, expected >= 1")
    images = scan_images(calib_dir)
    model_sha = file_sha256(model)
    spec_d = spec_to_dict(spec)
    key = cache_key({
        "model_sha256": model_sha, "calib_sha256": images.sha256, "settings": settings.key_dict(),
        "preprocessing": {k: spec_d[k] for k in _PREPROCESSING_KEYS}, "onnxruntime": onnxruntime.__version__,
    })
    hit = cache.lookup(key)
    if hit is not None and len(hit.get("used", [])) >= min_images:
        log.info("calibration cache hit %s: %d images, method %s", key, len(hit["used"]), settings.method)
        return Ranges(cache.ranges_path(key), key, True, settings.method, settings, model_sha, images.sha256,
                      images.root, len(images.files), list(hit["used"]), list(hit.get("skipped", [])),
                      time.perf_counter() - t0)

    data = preprocess_folder(images.files, spec, progress=progress, desc="calibration images")
    try:
        rows = evenly_spaced(len(data), settings.max_images)
        skipped = [images.rel(p) for p in data.skipped]
        if len(rows) < min_images:
            limit = (f" (limited to --calib-images {settings.max_images})"
                     if settings.max_images is not None and settings.max_images < len(data) else "")
            raise CalibrationError(
                f"calibration set {images.root}: {len(rows)} usable image(s){limit}, {len(skipped)} unreadable "
                f"skipped, of {len(images.files)} files; at least {min_images} are required (--min-images; "
                f"TensorRT's guidance is ~500 images representative of production)")
        tmp: tempfile.TemporaryDirectory[str] | None = None
        if cache.folder is not None:
            out = cache.ranges_path(key)
        else:
            tmp = tempfile.TemporaryDirectory(prefix="edgeqc-ranges-")
            out = Path(tmp.name) / f"{key}.ranges.json"
        batch = settings.batch if spec.dynamic_batch else min(settings.batch, spec.max_batch or 1)
        compute_ranges(model, data, rows, settings, input_name=spec.input_name, batch=batch, out_path=out,
                       progress=progress)
        used = [images.rel(data.files[i]) for i in rows]
        seconds = time.perf_counter() - t0
        if cache.folder is not None:
            cache.store_meta(key, {"used": used, "skipped": skipped, "method": settings.method,
                                   "model_sha256": model_sha, "calib_sha256": images.sha256,
                                   "seconds": round(seconds, 3)})
    except BaseException:
        data.close()
        raise
    result = Ranges(out, key, False, settings.method, settings, model_sha, images.sha256, images.root,
                    len(images.files), used, skipped, seconds, data if keep_data else None, tmp)
    if not keep_data:
        data.close()
    return result


@dataclass(frozen=True)
class QdqModel:
    """A written and checked Q/DQ model."""

    path: Path
    sha256: str
    excluded: tuple[str, ...]
    check: QdqSummary
    stats: PrecisionStats
    seconds: float


def write_qdq_model(
    model: str | Path,
    ranges: Ranges,
    out: str | Path,
    spec: ModelSpec,
    *,
    exclude: Sequence[str] = (),
    provenance: Mapping[str, Any] | None = None,
) -> QdqModel:
    """Quantize ``model`` with ``ranges`` into ``out``, then check the graph.

    Raises:
        calibration.qdq_check.QdqGraphError: the written graph breaks a TensorRT Q/DQ rule.
        ValueError: an unknown node name in ``exclude``.
    """
    import onnx

    t0 = time.perf_counter()
    prov: dict[str, Any] = {
        "tool": "onnxruntime.quantization.quantize_static", "method": ranges.method,
        "fp32_sha256": ranges.model_sha256, "calib_sha256": ranges.calib_sha256,
        "calib_images": len(ranges.used), "excluded": list(exclude),
    }
    prov.update(provenance or {})
    path = quantize_qdq(model, ranges.path, out, method=ranges.method, spec=spec, exclude=exclude, provenance=prov)
    m = onnx.load(str(path))
    summary = require_valid_qdq(m, str(path))
    stats = precision_stats(m, spec.input_size)
    return QdqModel(path, file_sha256(path), tuple(exclude), summary, stats, time.perf_counter() - t0)


def calibration_report(
    model: str | Path,
    ranges: Ranges,
    qdq: QdqModel,
    spec: ModelSpec,
    *,
    min_images: int,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON report of a calibration (see docs/build.md for the fields)."""
    import onnx
    import onnxruntime

    m = onnx.load(str(qdq.path))
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "model": {"path": str(model), "sha256": ranges.model_sha256},
        "calibration_set": {"path": str(ranges.calib_root), "sha256": ranges.calib_sha256,
                            "files": ranges.found, "used": len(ranges.used), "skipped": len(ranges.skipped),
                            "skipped_files": ranges.skipped, "min_images": min_images},
        "method": ranges.method,
        "settings": ranges.settings.key_dict() | {"batch": ranges.settings.batch,
                                                   "chunk_images": ranges.settings.chunk_images},
        "quantizer": {"tool": "onnxruntime.quantization.quantize_static", "onnxruntime": onnxruntime.__version__,
                      "format": "QDQ", "weights": "int8 symmetric per-channel (axis 0)",
                      "activations": "int8 symmetric per-tensor", "bias": "float (QuantizeBias=False)"},
        "cache": {"key": ranges.key, "hit": ranges.cache_hit, "ranges": str(ranges.path)},
        "calibration_seconds": round(ranges.seconds, 3),
        "output": {"path": str(qdq.path), "sha256": qdq.sha256, "bytes": qdq.path.stat().st_size},
        "model_spec": spec_to_dict(spec),
        "excluded_nodes": list(qdq.excluded),
        "qdq_check": {"ok": qdq.check.ok, "quantize_nodes": qdq.check.quantize_nodes,
                      "dequantize_nodes": qdq.check.dequantize_nodes, "weights_checked": qdq.check.weights_checked},
        "precision": qdq.stats.to_dict(),
        "activation_scales": activation_scales(m),
    }
    if extra:
        report.update(extra)
    return report


def load_calibration_rows(ranges: Ranges, spec: ModelSpec, count: int) -> Preprocessed:
    """``count`` calibration images (evenly spread over the used ones), preprocessed in memory —
    from the kept data when this run decoded them, else decoded again from disk."""
    pick = evenly_spaced(len(ranges.used), count)
    files = [ranges.calib_root.joinpath(*Path(ranges.used[i]).parts) for i in pick]
    if ranges.data is not None:
        pos = {p: i for i, p in enumerate(ranges.data.files)}
        if all(f in pos for f in files):
            return Preprocessed(ranges.data.array[[pos[f] for f in files]].copy(), files, [])
    data = preprocess_folder(files, spec, in_memory=True)
    if not len(data):
        raise DatasetError(f"{ranges.calib_root}: none of the {len(files)} calibration images could be read again")
    return data


def quantize_with_modelopt(
    model: str | Path,
    calib_dir: str | Path,
    out: str | Path,
    spec: ModelSpec,
    method: str,
    *,
    max_images: int | None = None,
    min_images: int = DEFAULT_MIN_IMAGES,
    exclude: Sequence[str] = (),
    progress: bool = False,
) -> tuple[Ranges, QdqModel]:
    """The optional ModelOpt path (:mod:`calibration.modelopt_quant`): same calibration set rules,
    metadata, graph checks and report fields as the ONNX Runtime path; no range cache.

    Raises:
        DatasetError / CalibrationError: as :func:`prepare_ranges`.
        RuntimeError: ModelOpt is not installed.
    """
    import onnx

    from calibration.modelopt_quant import MODELOPT_METHODS, modelopt_available, quantize_modelopt
    from calibration.quantize import stamp_metadata

    if method not in MODELOPT_METHODS or not modelopt_available():  # fail before decoding any image
        quantize_modelopt(model, np.zeros((0,), np.float32), out, method=method, input_name=spec.input_name)
    t0 = time.perf_counter()
    images = scan_images(calib_dir)
    data = preprocess_folder(images.files, spec, progress=progress, desc="calibration images")
    try:
        rows = evenly_spaced(len(data), max_images)
        if len(rows) < min_images:
            raise CalibrationError(
                f"calibration set {images.root}: {len(rows)} usable image(s), {len(data.skipped)} unreadable skipped, "
                f"of {len(images.files)} files; at least {min_images} are required (--min-images)")
        settings = CalibSettings("minmax", max_images=max_images)
        model_sha = file_sha256(model)
        with tempfile.TemporaryDirectory(prefix="edgeqc-mo-") as tmp:
            raw = quantize_modelopt(model, np.asarray(data.array[rows]), Path(tmp) / "q.onnx", method=method,
                                    input_name=spec.input_name, exclude=exclude)
            prov = {"tool": "modelopt.onnx.quantization.quantize", "method": method, "fp32_sha256": model_sha,
                    "calib_sha256": images.sha256, "calib_images": len(rows), "excluded": list(exclude)}
            path = stamp_metadata(raw, out, spec, prov)
        used = [images.rel(data.files[i]) for i in rows]
        skipped = [images.rel(p) for p in data.skipped]
    finally:
        data.close()
    ranges = Ranges(Path(out), "", False, method, settings, model_sha, images.sha256, images.root,
                    len(images.files), used, skipped, time.perf_counter() - t0)
    m = onnx.load(str(path))
    summary = require_valid_qdq(m, str(path))
    qdq = QdqModel(Path(path), file_sha256(path), tuple(exclude), summary, precision_stats(m, spec.input_size),
                   time.perf_counter() - t0)
    return ranges, qdq
