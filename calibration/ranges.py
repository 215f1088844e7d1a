"""Activation ranges from a calibration set (ONNX Runtime's calibrators, driven in chunks).

Methods (``onnxruntime.quantization.CalibrationMethod``):

- ``minmax``: running min/max of every tensor (ORT ``MinMaxCalibrater``); ~0.3 GB peak RSS.
- ``entropy``: KL-divergence threshold on a histogram (TensorRT's classic INT8 calibrator idea;
  ORT ``EntropyCalibrater``).
- ``percentile``: the ``percentile`` (default 99.999) of |x| (ORT ``PercentileCalibrater``).

Memory: ORT's histogram calibrators keep every intermediate tensor of every image until
``collect_data`` returns (facts.md §5: entropy on 500 images was OOM-killed at 20.9 GB). ORT's
own remedy, ``CalibStridedMinMax``, calls ``collect_data`` once per stride and merges; it needs
the image count to divide by the stride. Here the same merge happens with one ``collect_data``
call per chunk of ``chunk_images`` images (the last chunk may be shorter), so peak memory is
bounded by the chunk, not by the set.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calibration.dataset import Preprocessed

METHODS = ("minmax", "entropy", "percentile")
log = logging.getLogger("edgeqc.calibration")


@dataclass(frozen=True)
class CalibSettings:
    """How ranges are computed.

    Attributes:
        method: ``minmax`` | ``entropy`` | ``percentile``.
        max_images: use at most this many usable images, evenly spread over the sorted list
            (``None`` = all).
        chunk_images: images per ``collect_data`` call (bounds histogram-method memory; each
            image holds every intermediate tensor until its chunk is merged: ~78 MB per image
            for EfficientNet-Lite0 at 224x224).
        batch: images per inference call (models with a fixed batch of 1 get 1).
        percentile: for ``percentile``, in % (ORT default 99.999).
        num_bins: histogram bins (ORT defaults: entropy 128, percentile 2048); ``None`` = default.
    """

    method: str = "minmax"
    max_images: int | None = None
    chunk_images: int = 16
    batch: int = 1
    percentile: float = 99.999
    num_bins: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"calibration method {self.method!r}, expected one of {list(METHODS)}")
        if self.chunk_images < 1 or self.batch < 1:
            raise ValueError(f"chunk_images = {self.chunk_images}, batch = {self.batch}; expected >= 1")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images = {self.max_images}, expected >= 1 or None")
        if not 0.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile = {self.percentile}, expected 0 < p <= 100")

    def key_dict(self) -> dict[str, Any]:
        """The settings that change the ranges (cache key); ``batch``/``chunk_images`` do not
        for minmax, but are kept for histogram methods (chunk merging is not exactly associative)."""
        d = asdict(self)
        if self.method == "minmax":
            d.pop("chunk_images")
            d.pop("batch")
            d.pop("percentile")
            d.pop("num_bins")
        elif self.method == "entropy":
            d.pop("percentile")
        return d


def ort_method(method: str) -> Any:
    """``"minmax"`` -> ``CalibrationMethod.MinMax`` etc."""
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


def quantizable_op_types() -> list[str]:
    """The op types ``quantize_static`` quantizes by default (its registries), sorted."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


@contextlib.contextmanager
def quiet_ort_quantization() -> Iterator[None]:
    """Silence ONNX Runtime's quantization chatter: advice through the root logger ("Please
    consider to run pre-processing ..."; facts.md §4: results are identical without it) and the
    histogram calibrators' ``print`` progress lines (they would pollute ``--json -`` output);
    the printed lines go to this module's DEBUG log."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.ERROR)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            yield
    finally:
        root.setLevel(old)
        if buf.getvalue():
            log.debug("onnxruntime: %s", buf.getvalue().strip())


class _ChunkReader:
    """ONNX Runtime ``CalibrationDataReader`` over rows ``[start, end)`` of a :class:`Preprocessed`."""

    def __init__(self, data: Preprocessed, rows: list[int], input_name: str, batch: int) -> None:
        self._it = data.batches(batch, rows)
        self._name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {self._name: x}

    def __iter__(self) -> _ChunkReader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def compute_ranges(
    model_path: str | Path,
    data: Preprocessed,
    rows: list[int],
    settings: CalibSettings,
    *,
    input_name: str,
    batch: int,
    out_path: str | Path,
    progress: bool = False,
) -> None:
    """Run the calibrator on ``rows`` of ``data`` and save the ranges (ORT's calibration cache
    JSON, ``onnxruntime.quantization.save_tensors_data``) to ``out_path``.

    Args:
        model_path: FP32 ONNX model.
        data: preprocessed calibration images ``[n,3,H,W] float32``.
        rows: which rows to use.
        settings: method and chunking.
        input_name: the model's input tensor name.
        batch: images per inference call (1 for a fixed-batch-1 model).

    Raises:
        ValueError: ``rows`` is empty.
    """
    from onnxruntime.quantization import create_calibrator, save_tensors_data
    from tqdm import tqdm

    if not rows:
        raise ValueError("no calibration images to compute ranges from")
    extra: dict[str, Any] = {}
    if settings.method == "percentile":
        extra["percentile"] = settings.percentile
    if settings.num_bins is not None and settings.method != "minmax":
        extra["num_bins"] = settings.num_bins
    with tempfile.TemporaryDirectory(prefix="edgeqc-calib-") as tmp, quiet_ort_quantization():
        calibrator = create_calibrator(
            Path(model_path), quantizable_op_types(),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=ort_method(settings.method), extra_options=extra)
        chunk = settings.chunk_images
        with tqdm(total=len(rows), desc=f"calibrate ({settings.method})", unit="img", disable=None if progress else True,
                  leave=False) as bar:
            for s in range(0, len(rows), chunk):
                part = rows[s:s + chunk]
                calibrator.collect_data(_ChunkReader(data, part, input_name, batch))
                bar.update(len(part))
        ranges = calibrator.compute_data()
        del calibrator
    save_tensors_data(ranges, Path(out_path))
