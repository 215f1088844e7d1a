"""Optional quantizer: NVIDIA ModelOpt (``nvidia-modelopt[onnx]``), used only when installed.

ModelOpt gave the best plain-INT8 accuracy on mt-effnet-lite0 (facts.md §4: entropy 93.28 %
top-1 vs ONNX Runtime MinMax 89.55 %), but it is a 6.5 GB install with torch, so edgeqc does
not depend on it: install it in a separate environment and pick ``--method modelopt-entropy``
or ``modelopt-max``. Call used (ModelOpt 0.47 ``modelopt.onnx.quantization.quantize``):
``quantize_mode="int8"``, ``calibration_method``, ``calibration_data`` (``{input: [N,3,H,W]}``),
``calibration_eps=["cpu"]``, ``high_precision_dtype="fp32"`` (its default turns the float part
into FP16), ``nodes_to_exclude``, ``output_path``. ModelOpt rewrites its input file, so a copy is
passed. Not exercised in CI (ModelOpt is not installed there).
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MODELOPT_METHODS = {"modelopt-entropy": "entropy", "modelopt-max": "max"}


def modelopt_available() -> bool:
    """True when ``modelopt.onnx.quantization`` can be imported here."""
    try:
        return importlib.util.find_spec("modelopt.onnx.quantization") is not None
    except (ImportError, ValueError):
        return False


def quantize_modelopt(
    model_path: str | Path,
    calibration: np.ndarray,
    out_path: str | Path,
    *,
    method: str,
    input_name: str,
    exclude: Sequence[str] = (),
) -> Path:
    """Quantize with ModelOpt into ``out_path`` (no edgeqc metadata yet).

    Args:
        calibration: ``[N,3,H,W] float32`` preprocessed calibration images.
        method: ``modelopt-entropy`` or ``modelopt-max``.

    Raises:
        RuntimeError: ModelOpt is not installed.
        ValueError: unknown method.
    """
    if method not in MODELOPT_METHODS:
        raise ValueError(f"ModelOpt method {method!r}, expected one of {list(MODELOPT_METHODS)}")
    if not modelopt_available():
        raise RuntimeError(f"--method {method} needs NVIDIA ModelOpt: pip install 'nvidia-modelopt[onnx]' in a "
                           "separate environment (6.5 GB with torch; see docs/build.md)")
    from modelopt.onnx.quantization import quantize

    out = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="edgeqc-modelopt-") as tmp:
        src = Path(tmp) / "model.onnx"
        shutil.copyfile(model_path, src)
        dst = Path(tmp) / "model.int8.onnx"
        quantize(str(src), quantize_mode="int8", calibration_method=MODELOPT_METHODS[method],
                 calibration_data={input_name: np.ascontiguousarray(calibration)}, calibration_eps=["cpu"],
                 high_precision_dtype="fp32", nodes_to_exclude=list(exclude) or None, output_path=str(dst))
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(dst), out)
    return out
