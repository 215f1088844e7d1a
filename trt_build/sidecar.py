"""Engine output: the plain serialized plan plus its sidecar ``<engine>.json``, written atomically.

The plan file is exactly what ``build_serialized_network`` returned (loadable by ``trtexec
--loadEngine`` and any TensorRT tool; nothing is prepended). The sidecar records what the
runtime checks before deserializing (:mod:`edge.backends.engine_sidecar`, the reader and the
compatibility check): TensorRT version, GPU name and compute capability, plan sha256; plus the
precision, the I/O tensors, the model spec, the hashes of the ONNX model and the calibration
set, and the build settings, time and quantization record (excluded layers, gate numbers).

Atomic write: plan and sidecar are first written completely to temporary files in the target
folder, then moved over the old ones with ``os.replace``; a failed build (or a full disk)
leaves the previous engine and sidecar untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calibration.cache import file_mode
from edge.backends.engine_sidecar import sidecar_path
from edge.model_spec import ModelSpec, spec_to_dict
from trt_build.builder import BuiltPlan

SIDECAR_SCHEMA = 1


def make_sidecar(
    built: BuiltPlan,
    *,
    device_name: str,
    compute_capability: tuple[int, int],
    spec: ModelSpec,
    onnx_sha256: str,
    calib_sha256: str | None,
    quantization: Mapping[str, Any] | None = None,
    onnx_path: str | None = None,
) -> dict[str, Any]:
    """The sidecar dict for ``built`` (see the module docstring and docs/backends.md).

    Args:
        built: the plan and its I/O tensors.
        device_name / compute_capability: the GPU the plan was built on (``(major, minor)``).
        spec: the model spec the engine was built for.
        onnx_sha256 / calib_sha256: hashes of the ONNX model built and of the calibration set
            (None for FP16/FP32 engines).
        quantization: excluded layers, gate numbers, INT8 share of MACs (INT8 engines).
    """
    build: dict[str, Any] = {
        "settings": built.options.to_dict(),
        "profile": [p.to_dict() for p in built.profile],
        "seconds": round(built.seconds, 3),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "onnx_path": onnx_path,
        "tool": "edgeqc trt_build",
    }
    if quantization:
        build["quantization"] = dict(quantization)
    return {
        "schema": SIDECAR_SCHEMA,
        "trt_version": built.trt_version,
        "device_name": device_name,
        "compute_capability": [int(compute_capability[0]), int(compute_capability[1])],
        "precision": built.options.precision,
        "inputs": [t.to_dict() for t in built.inputs],
        "outputs": [t.to_dict() for t in built.outputs],
        "model_spec": spec_to_dict(spec),
        "plan_sha256": hashlib.sha256(built.plan).hexdigest(),
        "onnx_sha256": onnx_sha256,
        "calib_sha256": calib_sha256,
        "build": build,
    }


def _stage(folder: Path, name: str, data: bytes) -> str:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_engine(engine_path: str | Path, plan: bytes, sidecar: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``plan`` to ``engine_path`` and ``sidecar`` to ``<engine_path>.json`` atomically.

    Both files are staged completely before either replaces the old one, so an exception
    (disk full, bad sidecar data) leaves a previous engine and sidecar as they were.

    Raises:
        ValueError: ``sidecar['plan_sha256']`` does not match ``plan``.
        OSError: the folder cannot be written.
    """
    path = Path(engine_path)
    side = sidecar_path(path)
    want = sidecar.get("plan_sha256")
    got = hashlib.sha256(plan).hexdigest()
    if want != got:
        raise ValueError(f"sidecar plan_sha256 {str(want)[:16]}… does not match the plan ({got[:16]}…)")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (json.dumps(dict(sidecar), indent=2) + "\n").encode("utf-8")
    staged: list[str] = []
    try:
        staged.append(_stage(path.parent, path.name, plan))
        staged.append(_stage(path.parent, side.name, text))
        os.replace(staged[0], path)
        os.replace(staged[1], side)
        staged.clear()
    finally:
        for tmp in staged:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
    return path, side
