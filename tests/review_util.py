"""Helpers for the review tests: schema-v1 messages, real JPEGs, a real ZeroMQ station stand-in."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import zmq

LABELS = ("blowhole", "break", "crack", "fray", "free", "uneven")


def jpeg(seed: int, size: tuple[int, int] = (96, 128)) -> bytes:
    """A real JPEG (cv2.imencode) of a grey tile with a dark 'crack' line; differs per seed."""
    h, w = size
    img = np.full((h, w, 3), 150, np.uint8)
    rng = np.random.default_rng(seed)
    img += rng.integers(0, 20, img.shape, dtype=np.uint8)
    cv2.line(img, (int(rng.integers(0, w)), 0), (int(rng.integers(0, w)), h - 1), (30, 30, 30), 3)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def part_message(
    seq: int,
    label: str = "crack",
    probability: float = 0.9,
    verdict: str = "fail",
    station_id: str = "station-1",
    part_id: str | None = None,
    ts: float | None = None,
    reason: str | None = None,
    failsafe: str | None = None,
) -> dict[str, Any]:
    """A schema-v1 message as edge/result.py writes it."""
    t = time.time() if ts is None else ts
    rest = (1.0 - probability) / (len(LABELS) - 1)
    probs = {k: (probability if k == label else rest) for k in LABELS} if label in LABELS else {}
    return {
        "schema": 1, "station_id": station_id, "seq": seq, "part_id": part_id or f"P{seq:04d}",
        "trigger_ts": t - 0.02, "capture_ts": t - 0.015, "decision_ts": t,
        "verdict": verdict, "label": label, "probability": probability,
        "reason": reason if reason is not None else ("" if verdict == "pass" else label),
        "probabilities": probs,
        "latency_ms": {"capture": 1.0, "preprocess": 0.5, "infer": 10.0, "decide": 0.01, "total": 12.0},
        "source_id": f"val/{label}/img{seq}.jpg",
        "model": {"name": "model.onnx", "sha256": "ab" * 32, "precision": "fp32", "backend": "onnxruntime"},
        "failsafe": failsafe,
    }


def status_message(station_id: str = "station-1", parts: int = 10, camera: str = "ok", plc: str = "ok") -> dict[str, Any]:
    return {"schema": 1, "station_id": station_id, "ts": time.time(), "parts_per_min": 42.0, "parts": parts,
            "rejects": 2, "reject_rate": 0.2, "camera": camera, "plc": plc, "model": "ok"}


class FakeStation:
    """A real ZeroMQ PUB socket on loopback publishing like edge/publish.py does."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str | None = None) -> None:
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        if endpoint is None:
            port = self.sock.bind_to_random_port("tcp://127.0.0.1")
            endpoint = f"tcp://127.0.0.1:{port}"
        else:
            self.sock.bind(endpoint)
        self.endpoint = endpoint

    def result(self, msg: dict[str, Any]) -> None:
        self.sock.send_multipart([b"result", json.dumps(msg).encode()])

    def reject(self, msg: dict[str, Any], image: bytes) -> None:
        """``result`` then ``reject`` with the frame, like Publisher.handle for a fail."""
        body = json.dumps(msg).encode()
        self.sock.send_multipart([b"result", body])
        self.sock.send_multipart([b"reject", body, image])

    def status(self, **kw: Any) -> None:
        self.sock.send_multipart([b"status", json.dumps(status_message(**kw)).encode()])

    def close(self) -> None:
        self.sock.close(0)


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition", tick: Callable[[], None] | None = None) -> Any:
    """Poll ``cond`` until truthy (calling ``tick`` between polls); fail the test after ``timeout`` s."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        if tick is not None:
            tick()
        time.sleep(0.05)
