"""ONNX Runtime backend (CPU execution provider).

Fixed-batch models (input ``[B,3,H,W]`` with a number B) are fed in chunks of B, the last one
zero-padded and its extra rows dropped; dynamic-batch models get chunks of ``model.max_batch``
in one ``session.run`` each.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.backends import BackendError, as_probabilities, check_batch
from edge.model_spec import ModelSpec, resolve_spec
from edge.onnx_info import file_sha256, read_onnx_info

if TYPE_CHECKING:
    from typing_extensions import Self

    from edge.settings import ModelSettings


class OnnxRuntimeBackend:
    """:class:`edge.backends.Backend` on ``onnxruntime.InferenceSession`` (CPUExecutionProvider).

    Args:
        settings: ``[model]`` settings: ``path`` (.onnx), ``intra_op_threads`` (0 = ORT default),
            ``max_batch`` (chunk size for dynamic-batch models) and the spec overrides.
        spec: use this spec instead of :func:`edge.model_spec.resolve_spec`.

    Raises:
        FileNotFoundError: no model file. ModelSpecError: spec not resolvable.
        BackendError: ONNX Runtime cannot load the model, or the spec does not fit the graph.
    """

    name = "onnxruntime"

    def __init__(self, settings: ModelSettings, spec: ModelSpec | None = None) -> None:
        import onnxruntime as ort  # absolute import: the package, not this module

        self.model_path = Path(settings.path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"model file not found: {self.model_path}")
        self.spec: ModelSpec = spec if spec is not None else resolve_spec(self.model_path, settings)
        self.precision: str = read_onnx_info(self.model_path).precision
        self.model_hash: str = file_sha256(self.model_path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(settings.intra_op_threads)
        opts.log_severity_level = 3  # errors only
        try:
            self._session = ort.InferenceSession(str(self.model_path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001  (ORT raises its own exception types)
            raise BackendError(f"onnxruntime cannot load {self.model_path}: {exc}") from None
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        s = self.spec
        if s.input_name not in inputs or s.output_name not in outputs:
            raise BackendError(f"{self.model_path}: spec input {s.input_name!r} / output {s.output_name!r} "
                               f"not in the graph (inputs {list(inputs)}, outputs {sorted(outputs)})")
        shape = list(inputs[s.input_name].shape)
        for axis, want, have in (("height", s.input_size[0], shape[2]), ("width", s.input_size[1], shape[3])):
            if isinstance(have, int) and have != want:
                raise BackendError(f"{self.model_path}: spec input {axis} {want} but input "
                                   f"{s.input_name!r} {shape} is fixed to {have}")
        self._fixed_batch: int | None = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.max_batch: int = self._fixed_batch or int(settings.max_batch)
        self._pad: np.ndarray | None = None
        if self._fixed_batch is not None:
            self._pad = np.zeros((self._fixed_batch, 3, *s.input_size), np.float32)
        self._closed = False

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``[N,3,H,W] float32`` -> probabilities ``[N,C] float32`` (see :class:`edge.backends.Backend`)."""
        if self._closed:
            raise BackendError(f"onnxruntime backend for {self.model_path} is closed")
        check_batch(batch, self.spec, self.name)
        n, C = batch.shape[0], self.spec.num_classes
        if n == 0:
            return np.empty((0, C), np.float32)
        parts = []
        for start in range(0, n, self.max_batch):
            chunk = batch[start:start + self.max_batch]
            k = chunk.shape[0]
            feed = chunk
            if self._pad is not None and k < self.max_batch:
                self._pad[:k] = chunk
                self._pad[k:] = 0.0
                feed = self._pad
            raw = self._session.run([self.spec.output_name], {self.spec.input_name: feed})[0]
            parts.append(raw[:k])
        raw = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if raw.shape != (n, C):
            raise BackendError(f"{self.model_path}: output {self.spec.output_name!r} has shape {list(raw.shape)}, "
                               f"expected [{n},{C}] ({C} labels)")
        return as_probabilities(raw, self.spec)

    def close(self) -> None:
        """Release the session (idempotent)."""
        self._closed = True
        self._session = None  # type: ignore[assignment]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OnnxRuntimeBackend({self.model_path.name}, {self.precision}, max_batch={self.max_batch})"
