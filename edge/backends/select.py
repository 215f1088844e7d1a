"""On the CPU, run the faster of an FP32 ONNX model and its INT8 Q/DQ sibling (unless told which).

``edgeqc calibrate`` / ``edgeqc build`` write ``<name>.int8.onnx`` beside ``<name>.onnx`` (after the
accuracy gate). Whether ONNX Runtime runs the Q/DQ graph faster than FP32 depends on the CPU
(VNNI/AMX kernels, thread count) and the model: facts.md §4 measured Q/DQ *slower* than FP32 on
these 2-core CI machines. So :func:`choose_cpu_model` times both here, interleaved, on the same
zero input with the same ONNX Runtime settings, and keeps the faster; FP32 wins ties (it is the
accuracy reference). It never applies to TensorRT engines or the noop backend.

Use at station start (``edge.app.open_backend_for``)::

    choice = choose_cpu_model(settings.model)
    backend = open_backend(settings.model.model_copy(update={"path": str(choice.path)}), spec=choice.spec)

``prefer="fp32"`` / ``"int8"`` skips the measurement (the operator told which).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.backends import BackendError, backend_kind

if TYPE_CHECKING:
    from edge.model_spec import ModelSpec
    from edge.settings import ModelSettings

log = logging.getLogger("edgeqc.backends")

INT8_SUFFIX = ".int8.onnx"
PREFERENCES = ("auto", "fp32", "int8")
TIE_MARGIN = 0.03
"""INT8 must be more than 3 % faster (median latency) to replace FP32."""


@dataclass(frozen=True)
class CpuChoice:
    """The model to open. ``latency_ms``: median batch-1 latency per candidate (``{}`` when not
    measured); ``reason``: one line for the log."""

    path: Path
    precision: str
    reason: str
    spec: ModelSpec | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)


def int8_sibling(model_path: str | Path) -> Path | None:
    """``<name>.int8.onnx`` beside ``<name>.onnx`` if that file exists, else None."""
    p = Path(model_path)
    if p.suffix.lower() != ".onnx" or p.name.lower().endswith(INT8_SUFFIX):
        return None
    candidate = p.with_name(p.name[: -len(".onnx")] + INT8_SUFFIX)
    return candidate if candidate.is_file() else None


def choose_cpu_model(settings: ModelSettings, prefer: str = "auto", *, int8_path: str | Path | None = None,
                     runs: int = 15, warmup: int = 3) -> CpuChoice:
    """Pick FP32 (``settings.path``) or its INT8 Q/DQ model for ONNX Runtime on this CPU.

    Args:
        settings: the ``[model]`` section (path, threads, spec overrides).
        prefer: ``auto`` (measure), ``fp32`` or ``int8`` (no measurement).
        int8_path: the INT8 model; default :func:`int8_sibling`.
        runs / warmup: timed / untimed batch-1 runs per candidate (interleaved).

    Returns:
        A :class:`CpuChoice`; its ``spec`` is resolved from the FP32 model and ``settings`` (the
        same preprocessing for both), None when nothing was opened.

    Raises:
        ValueError: ``prefer`` not one of :data:`PREFERENCES`.
        BackendError: ``prefer="int8"`` but there is no INT8 model.
    """
    if prefer not in PREFERENCES:
        raise ValueError(f"prefer = {prefer!r}, expected one of {list(PREFERENCES)}")
    fp32 = Path(settings.path)
    if backend_kind(settings) != "onnxruntime" or fp32.name.lower().endswith(INT8_SUFFIX):
        return CpuChoice(fp32, "as configured", "not an FP32 ONNX model for ONNX Runtime: used as configured")
    int8 = Path(int8_path) if int8_path is not None else int8_sibling(fp32)
    if prefer == "fp32":
        return CpuChoice(fp32, "fp32", "FP32 requested")
    if int8 is None or not int8.is_file():
        if prefer == "int8":
            raise BackendError(f"INT8 model requested but {int8 or fp32.with_name(fp32.stem + INT8_SUFFIX)} "
                               "does not exist (run `edgeqc calibrate` or `edgeqc build`)")
        return CpuChoice(fp32, "fp32", f"no INT8 model beside {fp32.name}")
    if prefer == "int8":
        return CpuChoice(int8, "int8", "INT8 requested")

    from edge.backends.onnxruntime import OnnxRuntimeBackend
    from edge.model_spec import resolve_spec

    spec = resolve_spec(fp32, settings)
    backends = {"fp32": OnnxRuntimeBackend(settings, spec),
                "int8": OnnxRuntimeBackend(settings.model_copy(update={"path": str(int8)}), spec)}
    try:
        x = np.zeros((1, 3, *spec.input_size), np.float32)
        times: dict[str, list[float]] = {k: [] for k in backends}
        for i in range(warmup + runs):
            for name, b in backends.items():  # interleaved: load changes hit both alike
                t0 = time.perf_counter()
                b.infer(x)
                if i >= warmup:
                    times[name].append(1000.0 * (time.perf_counter() - t0))
    finally:
        for b in backends.values():
            b.close()
    med = {k: round(float(np.median(v)), 3) for k, v in times.items()}
    faster = med["int8"] < (1.0 - TIE_MARGIN) * med["fp32"]
    path, precision = (int8, "int8") if faster else (fp32, "fp32")
    reason = (f"ONNX Runtime here: FP32 {med['fp32']:.2f} ms, INT8 {med['int8']:.2f} ms median batch-1 latency "
              f"({runs} interleaved runs) -> {precision.upper()}")
    log.info("model choice: %s", reason)
    return CpuChoice(path, precision, reason, spec, med)
