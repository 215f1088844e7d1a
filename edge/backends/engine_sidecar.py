"""The engine sidecar (``<engine>.json``) and the check that an engine may run on this device.

Contract with ``trt_build`` (which writes the sidecar): a JSON object next to the plan, at
``<engine path> + ".json"`` (``model.engine`` -> ``model.engine.json``), with keys

- ``trt_version`` (str, ``tensorrt.__version__`` at build time), ``device_name`` (str),
  ``compute_capability`` ([major, minor]), ``precision`` ("fp32" | "fp16" | "int8"),
- ``inputs`` / ``outputs``: lists of ``{"name", "shape", "dtype"}`` (shape with -1 for dynamic
  axes, dtype a numpy name such as "float32"),
- ``model_spec``: :func:`edge.model_spec.spec_to_dict` of the spec the engine was built for,
- ``plan_sha256``, ``onnx_sha256``, ``calib_sha256`` (hex, or null), ``build`` (settings, time).

TensorRT plans are tied to the TensorRT version and the GPU they were built on ("engines are
not portable across platforms or TensorRT versions", TensorRT developer guide); the check
below compares the sidecar with the running device *before* deserializing, so a mismatch gives
a clear message instead of a TensorRT deserialization error. Everything here is pure Python.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SIDECAR_SUFFIX = ".json"
REQUIRED_KEYS = ("trt_version", "compute_capability", "plan_sha256", "model_spec", "inputs", "outputs")


class EngineCompatError(RuntimeError):
    """The engine cannot run on this device (missing sidecar, version/GPU/hash mismatch); the
    message lists every mismatch and says the engine must be rebuilt on this device."""


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def _rebuild_hint(engine_path: str | Path) -> str:
    return (f"The engine must be rebuilt on this device from its ONNX model "
            f"(`edgeqc build`, which writes {sidecar_path(engine_path).name} next to the plan).")


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    """Load the sidecar JSON of ``engine_path``.

    Raises:
        EngineCompatError: the sidecar is missing, not JSON, or not an object.
    """
    sp = sidecar_path(engine_path)
    try:
        text = sp.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EngineCompatError(
            f"engine {engine_path}: sidecar {sp} is missing, so the TensorRT version, GPU and plan hash "
            f"it was built for are unknown. {_rebuild_hint(engine_path)}") from None
    except OSError as exc:
        raise EngineCompatError(f"engine {engine_path}: cannot read sidecar {sp} ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EngineCompatError(f"engine {engine_path}: sidecar {sp} is not valid JSON ({exc}). "
                                f"{_rebuild_hint(engine_path)}") from None
    if not isinstance(data, dict):
        raise EngineCompatError(f"engine {engine_path}: sidecar {sp} must be a JSON object, got "
                                f"{type(data).__name__}")
    return data


def _cc(v: Any) -> tuple[int, int] | None:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return (int(v[0]), int(v[1]))
    if isinstance(v, str) and "." in v:  # tolerate "8.7"
        a, _, b = v.partition(".")
        if a.isdigit() and b.isdigit():
            return (int(a), int(b))
    return None


def check_engine_compat(
    sidecar: Mapping[str, Any],
    *,
    plan_sha256: str,
    trt_version: str | None,
    compute_capability: Sequence[int] | None,
    device_name: str | None = None,
) -> list[str]:
    """Compare a sidecar with this device; return one message per mismatch (empty = compatible).

    Args:
        sidecar: the loaded ``<engine>.json``.
        plan_sha256: hex sha256 of the plan file as it is on disk now.
        trt_version: ``tensorrt.__version__`` of the running TensorRT (exact match required);
            ``None`` = unknown here (not checked).
        compute_capability: ``(major, minor)`` of the GPU that will run the engine; ``None`` =
            unknown here (not checked).
        device_name: GPU name, only used to make messages clearer.
    """
    problems: list[str] = []
    missing = [k for k in REQUIRED_KEYS if k not in sidecar]
    if missing:
        problems.append(f"sidecar lacks key(s) {missing}")
    built_v = sidecar.get("trt_version")
    if built_v is not None and trt_version is not None and str(built_v) != str(trt_version):
        problems.append(f"TensorRT version mismatch: engine built with TensorRT {built_v}, "
                        f"this device runs TensorRT {trt_version}")
    if "compute_capability" in sidecar and compute_capability is not None:
        here_cc = (int(compute_capability[0]), int(compute_capability[1]))
        built_cc = _cc(sidecar["compute_capability"])
        built_dev = sidecar.get("device_name") or "unknown GPU"
        here_dev = device_name or "this GPU"
        if built_cc is None:
            problems.append(f"sidecar compute_capability = {sidecar['compute_capability']!r}, expected [major, minor]")
        elif built_cc != here_cc:
            problems.append(f"GPU compute capability mismatch: engine built for {built_cc[0]}.{built_cc[1]} "
                            f"({built_dev}), this device is {here_cc[0]}.{here_cc[1]} ({here_dev})")
    want = sidecar.get("plan_sha256")
    if want is not None and str(want).lower() != plan_sha256.lower():
        problems.append(f"plan sha256 mismatch: sidecar records {str(want)[:16]}…, the plan file hashes to "
                        f"{plan_sha256[:16]}… (plan replaced or corrupted, or sidecar of another engine)")
    return problems


def require_engine_compat(
    engine_path: str | Path,
    sidecar: Mapping[str, Any],
    *,
    plan_sha256: str,
    trt_version: str | None,
    compute_capability: Sequence[int] | None,
    device_name: str | None = None,
) -> None:
    """Raise :class:`EngineCompatError` listing every mismatch from :func:`check_engine_compat`."""
    problems = check_engine_compat(sidecar, plan_sha256=plan_sha256, trt_version=trt_version,
                                   compute_capability=compute_capability, device_name=device_name)
    if problems:
        raise EngineCompatError(f"engine {engine_path} cannot run on this device: " + "; ".join(problems)
                                + ". " + _rebuild_hint(engine_path))
