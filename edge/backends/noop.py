"""A backend that runs no model: fixed probabilities at once (pipeline-overhead benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.backends import BackendInputError, check_batch
from edge.model_spec import ModelSpec, resolve_spec
from edge.onnx_info import file_sha256

if TYPE_CHECKING:
    from typing_extensions import Self

    from edge.settings import ModelSettings


class NoopBackend:
    """Returns the same probability row for every input, ``[N,C] float32``.

    Args:
        spec: the model spec (input checks, labels).
        probabilities: ``C`` values >= 0 summing to 1; default uniform ``1/C``. Pass e.g. a
            one-hot row of a pass class to benchmark the pass path.
        model_path / model_hash / precision / max_batch: reported as-is.

    Raises:
        BackendInputError: ``probabilities`` of the wrong length or not a distribution.
    """

    name = "noop"

    def __init__(self, spec: ModelSpec, probabilities: Sequence[float] | None = None, *,
                 model_path: Path | str = "noop", model_hash: str = "0" * 64, precision: str = "fp32",
                 max_batch: int = 8) -> None:
        C = spec.num_classes
        row = np.full(C, 1.0 / C, np.float32) if probabilities is None else np.asarray(probabilities, np.float32)
        if row.shape != (C,) or (row < 0).any() or abs(float(row.sum()) - 1.0) > 1e-4:
            raise BackendInputError(f"noop probabilities {row.tolist()}: expected {C} values >= 0 summing to 1 "
                                    f"(labels {list(spec.labels)})")
        self.spec = spec
        self._row = row
        self.model_path = Path(model_path)
        self.model_hash = model_hash
        self.precision = precision
        self.max_batch = int(max_batch)

    @classmethod
    def from_settings(cls, settings: ModelSettings, spec: ModelSpec | None = None) -> NoopBackend:
        """Spec from ``settings.path`` (metadata only, no session) unless given; hash of that file."""
        path = Path(settings.path)
        spec = spec if spec is not None else resolve_spec(path, settings)
        digest = file_sha256(path) if path.is_file() else "0" * 64
        return cls(spec, model_path=path, model_hash=digest, max_batch=settings.max_batch)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``[N,3,H,W] float32`` -> the fixed row repeated, ``[N,C] float32``."""
        check_batch(batch, self.spec, self.name)
        return np.repeat(self._row[None, :], batch.shape[0], axis=0)

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
