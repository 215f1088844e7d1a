"""Parse the station messages the review page consumes (ZeroMQ / archive JSON, schema v1).

Pure functions, no sockets: bytes in, checked objects out. The schema is fixed in
docs/ARCHITECTURE.md; :mod:`edge.result` writes it. A message that does not fit raises
:class:`MessageError` naming the field, the value and what was expected, so the subscriber can
count and log it without stopping.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1


class MessageError(ValueError):
    """A message does not follow schema v1 (the text names field, value and expectation)."""


@dataclass(frozen=True)
class PartMessage:
    """One ``result`` / ``reject`` JSON (schema v1), checked.

    ``ts`` is the time the review page files the part under, UNIX seconds: ``decision_ts``, else
    ``capture_ts``, else ``trigger_ts`` (fail-safe answers may have no decision time).
    ``probabilities`` maps every model label to its probability (empty for fail-safe answers).
    ``raw`` is the whole JSON object as received (kept verbatim in the store).
    """

    station_id: str
    seq: int
    part_id: str
    trigger_ts: float
    ts: float
    verdict: str
    label: str
    probability: float
    reason: str
    probabilities: dict[str, float]
    failsafe: str | None
    source_id: str | None
    raw: dict[str, Any]

    @property
    def is_reject(self) -> bool:
        return self.verdict == "fail"

    def top(self, n: int = 3) -> list[tuple[str, float]]:
        """The ``n`` most probable classes, highest first."""
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:n]


def _field(obj: dict[str, Any], name: str, kinds: tuple[type, ...], required: bool = True) -> Any:
    if name not in obj or obj[name] is None:
        if required:
            raise MessageError(f"field {name!r} missing (schema v1 requires it)")
        return None
    v = obj[name]
    if isinstance(v, bool) or not isinstance(v, kinds):
        want = "/".join(k.__name__ for k in kinds)
        raise MessageError(f"field {name!r} = {v!r}: expected {want}")
    if isinstance(v, float) and not math.isfinite(v):
        raise MessageError(f"field {name!r} = {v!r}: expected a finite number")
    return v


def _load(data: bytes | str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(data, dict):
        obj = data
    else:
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MessageError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MessageError(f"expected a JSON object, got {type(obj).__name__}")
    schema = obj.get("schema")
    if schema != SCHEMA_VERSION:
        raise MessageError(f"field 'schema' = {schema!r}: expected {SCHEMA_VERSION}")
    return obj


def parse_part(data: bytes | str | dict[str, Any]) -> PartMessage:
    """Check one ``result``/``reject`` JSON body. Raises :class:`MessageError`."""
    obj = _load(data)
    station = _field(obj, "station_id", (str,))
    seq = _field(obj, "seq", (int,))
    part_id = _field(obj, "part_id", (str,))
    trigger_ts = float(_field(obj, "trigger_ts", (int, float)))
    capture_ts = _field(obj, "capture_ts", (int, float), required=False)
    decision_ts = _field(obj, "decision_ts", (int, float), required=False)
    verdict = _field(obj, "verdict", (str,))
    if verdict not in ("pass", "fail"):
        raise MessageError(f"field 'verdict' = {verdict!r}: expected 'pass' or 'fail'")
    label = _field(obj, "label", (str,))
    probability = float(_field(obj, "probability", (int, float)))
    reason = _field(obj, "reason", (str,), required=False) or ""
    probs_raw = obj.get("probabilities") or {}
    if not isinstance(probs_raw, dict) or not all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in probs_raw.items()
    ):
        raise MessageError("field 'probabilities': expected an object of label -> number")
    failsafe = _field(obj, "failsafe", (str,), required=False)
    source_id = _field(obj, "source_id", (str,), required=False)
    ts = decision_ts if decision_ts is not None else capture_ts if capture_ts is not None else trigger_ts
    return PartMessage(
        station_id=station, seq=seq, part_id=part_id, trigger_ts=trigger_ts, ts=float(ts),
        verdict=verdict, label=label, probability=probability, reason=reason,
        probabilities={k: float(v) for k, v in probs_raw.items()}, failsafe=failsafe,
        source_id=source_id, raw=obj,
    )


STATUS_FIELDS = ("parts_per_min", "parts", "rejects", "reject_rate", "camera", "plc", "model")


def parse_status(data: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """Check one ``status`` JSON body; returns the object (``station_id`` and ``ts`` guaranteed).

    Raises :class:`MessageError`. Unknown extra fields are kept (newer runtimes may add some).
    """
    obj = _load(data)
    _field(obj, "station_id", (str,))
    _field(obj, "ts", (int, float))
    for name in ("parts_per_min", "reject_rate"):
        _field(obj, name, (int, float), required=False)
    for name in ("parts", "rejects"):
        _field(obj, name, (int,), required=False)
    for name in ("camera", "plc", "model"):
        _field(obj, name, (str,), required=False)
    return obj


IMAGE_MAGIC = {b"\xff\xd8\xff": "jpg", b"\x89PNG\r\n\x1a\n": "png"}


def image_format(data: bytes) -> str | None:
    """``"jpg"``/``"png"`` from the first bytes, else None (empty or not an image we keep)."""
    for magic, fmt in IMAGE_MAGIC.items():
        if data.startswith(magic):
            return fmt
    return None


def check_image(data: bytes) -> str | None:
    """Format of ``data`` if it decodes as a JPEG/PNG image, else None (corrupt or empty).

    Decodes with OpenCV (``cv2.imdecode``; JPEGs at 1/8 scale, which libjpeg does without the
    full inverse DCT) so a truncated frame is caught on arrival, not at export time.
    """
    fmt = image_format(data)
    if fmt is None:
        return None
    import cv2
    import numpy as np

    flag = cv2.IMREAD_REDUCED_GRAYSCALE_8 if fmt == "jpg" else cv2.IMREAD_UNCHANGED
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    return fmt if img is not None and img.size > 0 else None
