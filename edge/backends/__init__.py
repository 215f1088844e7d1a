"""Inference backends behind one small interface (Polygraphy-like life cycle).

Every backend takes ``[N,3,H,W] float32`` C-contiguous input (N >= 1, any N: larger batches are
run in chunks of ``max_batch``) and returns probabilities ``[N,C] float32`` (C-contiguous;
softmax applied when the model outputs logits). Usable as a context manager; ``close()`` frees
everything and is idempotent.

``open_backend(settings.model)`` picks: ``tensorrt`` for ``.engine``/``.plan``/``.trt`` files,
``onnxruntime`` for anything else, unless ``model.backend`` names one; ``noop`` returns fixed
probabilities without running a model (pipeline-overhead benchmarks). TensorRT/pycuda are only
imported when a TensorRT backend is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from edge.model_spec import ENGINE_SUFFIXES, ModelSpec, spec_from_dict, spec_to_dict

if TYPE_CHECKING:
    from typing_extensions import Self

    from edge.settings import ModelSettings

__all__ = [
    "Backend",
    "BackendError",
    "BackendInputError",
    "backend_kind",
    "check_batch",
    "open_backend",
    "softmax",
    "spec_from_dict",
    "spec_to_dict",
]

PRECISIONS = ("fp32", "fp16", "int8")


class BackendError(RuntimeError):
    """A backend cannot be opened or failed while running (message names model and cause)."""


class BackendInputError(ValueError):
    """``infer`` got an input that does not match the model (message: expected vs got)."""


@runtime_checkable
class Backend(Protocol):
    """What the inspection loop, calibration, evaluation and the benchmark use.

    Attributes:
        spec: the :class:`~edge.model_spec.ModelSpec` (labels, input size, preprocessing).
        name: backend kind, ``"onnxruntime"`` | ``"tensorrt"`` | ``"noop"``.
        model_path: the model file (``model_path.name`` goes into result messages).
        precision: ``"fp32"`` | ``"fp16"`` | ``"int8"`` (ONNX with Q/DQ nodes -> int8; engines:
            from the sidecar).
        model_hash: hex sha256 of the model file.
        max_batch: largest batch run in one call; bigger inputs are split.
    """

    spec: ModelSpec
    name: str
    model_path: Path
    precision: str
    model_hash: str
    max_batch: int

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``[N,3,H,W] float32`` C-contiguous -> probabilities ``[N,C] float32``.

        Raises:
            BackendInputError: wrong dtype, rank, shape or memory layout.
        """
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


def check_batch(batch: object, spec: ModelSpec, backend: str) -> np.ndarray:
    """Validate an ``infer`` input against the backend's own metadata.

    Raises:
        BackendInputError: not a numpy array, not float32, not ``[N,3,H,W]`` with the model's
            H/W, or not C-contiguous.
    """
    H, W = spec.input_size
    want = f"[N,3,{H},{W}] float32 C-contiguous (input {spec.input_name!r})"
    if not isinstance(batch, np.ndarray):
        raise BackendInputError(f"{backend}: input is {type(batch).__name__}, expected numpy {want}")
    if batch.dtype != np.float32:
        raise BackendInputError(f"{backend}: input dtype {batch.dtype}, expected {want}")
    if batch.ndim != 4 or batch.shape[1:] != (3, H, W):
        raise BackendInputError(f"{backend}: input shape {list(batch.shape)}, expected {want}")
    if not batch.flags.c_contiguous:
        raise BackendInputError(f"{backend}: input is not C-contiguous (use np.ascontiguousarray), expected {want}")
    return batch


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis of ``[N,C]``; returns ``[N,C] float32``
    (computed in float32; the row max is subtracted first)."""
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return np.ascontiguousarray(e, dtype=np.float32)


def as_probabilities(raw: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Model output ``[N,C]`` -> probabilities ``[N,C] float32`` C-contiguous (softmax for logits)."""
    if spec.output == "logits":
        return softmax(raw)
    return np.ascontiguousarray(raw, dtype=np.float32)


def backend_kind(settings: ModelSettings) -> str:
    """``settings.backend`` resolved: ``auto`` -> ``tensorrt`` for engine files, else ``onnxruntime``."""
    if settings.backend != "auto":
        return settings.backend
    return "tensorrt" if Path(settings.path).suffix.lower() in ENGINE_SUFFIXES else "onnxruntime"


def demo_model_path() -> Path:
    """The built-in demo classifier (``edge.demo.DEMO_MODEL``).

    Raises:
        BackendError: the demo model file is missing.
    """
    from edge.demo import DEMO_MODEL

    if not Path(DEMO_MODEL).is_file():
        raise BackendError(f"model.path = 'demo': the demo model {DEMO_MODEL} is missing")
    return Path(DEMO_MODEL)


def open_backend(settings: ModelSettings, spec: ModelSpec | None = None) -> Backend:
    """Open the backend named by ``settings`` (see module docstring).

    Args:
        settings: the ``[model]`` settings (path, backend, overrides, threads, max_batch).
        spec: use this spec instead of resolving one from the model (``resolve_spec``).

    Raises:
        FileNotFoundError: the model file does not exist.
        ModelSpecError: the spec cannot be resolved.
        EngineCompatError: a TensorRT engine was built for another TensorRT/GPU, or its
            sidecar is missing.
        BackendError: the runtime cannot load the model (e.g. TensorRT/pycuda not installed).
    """
    if settings.path == "demo":
        settings = settings.model_copy(update={"path": str(demo_model_path())})
    kind = backend_kind(settings)
    if kind == "onnxruntime":
        from edge.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(settings, spec)
    if kind == "tensorrt":
        from edge.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(settings, spec)
    if kind == "noop":
        from edge.backends.noop import NoopBackend

        return NoopBackend.from_settings(settings, spec)
    raise BackendError(f"model.backend = {kind!r}, expected auto, onnxruntime, tensorrt or noop")
