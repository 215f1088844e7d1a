"""The result of one inspection, and its wire form (ZeroMQ / archive JSON, schema v1).

One object flows from the inspection loop to every output (PLC, ZeroMQ, archive, metrics), so
adding an output never touches the loop. The JSON schema is documented in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.decision import Verdict

SCHEMA_VERSION = 1
FAILSAFE_CAUSES = ("TIMEOUT", "NO_FRAME", "ERROR")


@dataclass
class ModelInfo:
    """What answered: file name, sha256 of the model/plan, precision (fp32/fp16/int8), backend."""

    name: str
    sha256: str
    precision: str
    backend: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "sha256": self.sha256, "precision": self.precision, "backend": self.backend}


@dataclass
class InspectionResult:
    """One inspected (or fail-safe answered) part.

    Times: ``*_ts`` are UNIX seconds; ``latency_ms`` per stage in ms (capture = trigger -> frame,
    preprocess, infer, decide, plc = trigger -> RES written, total = trigger -> decision).
    ``frame`` is the captured image in the model's channel order (HxW or HxWx3, uint8/uint16), or
    None for a fail-safe answer without a frame. ``truth`` is the ground-truth label of a replayed
    image (folder source with class subfolders), else None.
    """

    seq: int
    part_id: str
    station_id: str
    trigger_ts: float
    verdict: Verdict
    capture_ts: float | None = None
    decision_ts: float | None = None
    probabilities: np.ndarray | None = None
    labels: tuple[str, ...] = ()
    latency_ms: dict[str, float] = field(default_factory=dict)
    source_id: str | None = None
    model: ModelInfo | None = None
    failsafe: str | None = None
    frame: np.ndarray | None = None
    truth: str | None = None
    channel_order: str = "RGB"
    _message: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)
    _encoded: tuple[str, int, bytes] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    @property
    def is_reject(self) -> bool:
        return not self.verdict.passed

    def to_message(self) -> dict[str, Any]:
        """The schema-v1 JSON object (see docs/ARCHITECTURE.md). Built once: ZeroMQ, metrics and
        the archive all read it, so a result must not be changed once it was emitted; treat the
        dict as read-only."""
        if self._message is None:
            self._message = self._build_message()
        return self._message

    def _build_message(self) -> dict[str, Any]:
        probs: dict[str, float] = {}
        if self.probabilities is not None:
            probs = {name: round(float(p), 6) for name, p in zip(self.labels, self.probabilities)}
        return {
            "schema": SCHEMA_VERSION,
            "station_id": self.station_id,
            "seq": self.seq,
            "part_id": self.part_id,
            "trigger_ts": self.trigger_ts,
            "capture_ts": self.capture_ts,
            "decision_ts": self.decision_ts,
            "verdict": "pass" if self.verdict.passed else "fail",
            "label": self.verdict.label,
            "probability": round(self.verdict.probability, 6),
            "reason": self.verdict.reason,
            "probabilities": probs,
            "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
            "source_id": self.source_id,
            "truth": self.truth,
            "model": self.model.to_dict() if self.model else None,
            "failsafe": self.failsafe,
        }

    def frame_bgr(self) -> np.ndarray | None:
        """The frame in OpenCV's BGR order, for JPEG/PNG encoding (None without a frame)."""
        f = self.frame
        if f is None:
            return None
        if f.ndim == 3 and f.shape[2] == 3 and self.channel_order == "RGB":
            return np.ascontiguousarray(f[:, :, ::-1])
        return f

    def encoded(self, image_format: str, jpeg_quality: int) -> bytes:
        """:meth:`frame_bgr` encoded with :func:`edge.archive.encode_frame` (``"jpg"``/``"png"``,
        quality 1..100), kept on the result: the ZeroMQ reject message and the reject archive share
        one encoding when their format and quality agree (the defaults do; a 371x504 gray frame
        takes ~0.45 ms at quality 95 on the CI machines, once per reject instead of twice).
        Called from the outputs thread only.

        Raises:
            ValueError: no frame, or what :func:`edge.archive.encode_frame` raises.
        """
        cached = self.encoded_if_cached(image_format, jpeg_quality)
        if cached is not None:
            return cached
        from edge.archive import encode_frame  # edge.archive needs cv2; results without frames do not

        bgr = self.frame_bgr()
        if bgr is None:
            raise ValueError(f"part {self.part_id}: no frame to encode")
        data = encode_frame(bgr, image_format, jpeg_quality)
        self._encoded = (image_format, jpeg_quality, data)
        return data

    def encoded_if_cached(self, image_format: str, jpeg_quality: int) -> bytes | None:
        """The bytes of an earlier :meth:`encoded` with this format and quality, else None."""
        cached = self._encoded
        if cached is not None and cached[0] == image_format and cached[1] == jpeg_quality:
            return cached[2]
        return None


def failsafe_verdict(cause: str) -> Verdict:
    """The verdict sent when no result is ready: fail, label = cause, probability 0."""
    if cause not in FAILSAFE_CAUSES:
        raise ValueError(f"fail-safe cause {cause!r} not in {FAILSAFE_CAUSES}")
    return Verdict(False, cause, 0.0, cause)
