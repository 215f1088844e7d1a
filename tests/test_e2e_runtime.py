"""End to end on the CPU with real components (issue 2's "Done when").

The shared EfficientNet-Lite0 under ONNX Runtime over the shared val images, in trigger mode,
answering the PLC simulator over a socat pty pair; a ZeroMQ SUB on loopback receives every result
and every reject image; the run summary must reproduce the model card's val figures.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import zmq

from edge.app import Station
from edge.plc.pty import PtyPair
from edge.plc.simulator import PlcSimulator
from edge.settings import Settings, load_settings

pytestmark = pytest.mark.timeout(300)


def _settings(tmp_path: Path, effnet: Path, source: Path, **plc: Any) -> Settings:
    return load_settings(
        station_id="test",
        camera={"source": str(source)},
        model={"path": str(effnet), "resize": "stretch", "interpolation": "pillow_bilinear",
               "channel_order": "RGB", "scale": 1 / 255, "mean": (0.485, 0.456, 0.406),
               "std": (0.229, 0.224, 0.225)},
        decision={"pass_classes": ["free"], "min_pass_probability": 0.0},
        plc={"port": "demo", "deadline_ms": 10000, **plc},
        zmq={"endpoint": "tcp://127.0.0.1:0"},
        archive={"path": str(tmp_path / "archive")},
        metrics={"enabled": False},
    )


class _Sub:
    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.connect(endpoint)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"result")
        self.sock.setsockopt(zmq.SUBSCRIBE, b"reject")
        self.results: list[dict[str, Any]] = []
        self.rejects: list[tuple[dict[str, Any], bytes]] = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.sock.poll(100):
                parts = self.sock.recv_multipart()
                if parts[0] == b"result":
                    self.results.append(json.loads(parts[1]))
                else:
                    self.rejects.append((json.loads(parts[1]), parts[2]))

    def close(self) -> None:
        self.stop.set()
        self.t.join(2)
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture(scope="module")
def val_run(tmp_path_factory: pytest.TempPathFactory, effnet_path: Path, val_dir: Path) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("val")
    s = _settings(tmp, effnet_path, val_dir)
    with PtyPair(backend="socat") as pty:
        station = Station(s, plc_port=pty.a)
        sub = _Sub(station.publisher.endpoint)  # type: ignore[union-attr]
        import time

        time.sleep(0.3)  # ZeroMQ slow joiner
        station.start()
        sim = PlcSimulator(pty.b, rate_hz=25, count=268, answer_timeout_ms=11000)
        report = sim.run(timeout=120)
        summary = station.stop()
        time.sleep(0.5)
        sub.close()
    return {"summary": summary, "report": report, "sub": sub, "spec": station.backend.spec}


def test_one_correct_res_per_trigger(val_run: dict[str, Any]) -> None:
    r = val_run["report"]
    assert r.triggers_sent == 268 and r.answered == 268
    assert (r.missing, r.duplicates, r.unexpected, r.late, r.bad_checksum, r.malformed) == ([], [], [], [], 0, 0)
    assert r.verdicts == {"P": 190, "F": 78}  # the card: 184 + 6 escapes pass, 6 false rejects + 72 fail
    link = val_run["summary"]["plc_link"]  # the station's own count agrees with the PLC's
    assert link["dropped_results"] == link["dropped"] == link["write_errors"] == link["naks_sent"] == 0
    assert link["telegrams_sent"] - link["heartbeats_sent"] == 268  # every RES written once
    assert link["heartbeats_sent"] >= r.heartbeats  # (one may go out after the PLC stopped reading)


def test_summary_matches_model_card(val_run: dict[str, Any]) -> None:
    gt = val_run["summary"]["ground_truth"]
    assert (gt["images"], gt["top1_correct"]) == (268, 254)  # 94.78 %
    assert (gt["defect_escapes"], gt["defective_parts"]) == (6, 78)  # 7.69 %
    assert (gt["false_rejects"], gt["good_parts"]) == (6, 190)  # 3.16 %
    assert gt["confusion"]["break->free"] == 5 and gt["confusion"]["free->break"] == 4


def test_zmq_carries_every_result_and_reject_image(val_run: dict[str, Any]) -> None:
    sub = val_run["sub"]
    assert sorted(m["seq"] for m in sub.results) == list(range(1, 269))
    assert len(sub.rejects) == 78
    assert all(jpeg[:2] == b"\xff\xd8" for _, jpeg in sub.rejects)
    assert {m["source_id"] for m, _ in sub.rejects} <= {m["source_id"] for m in sub.results}
    assert all(m["verdict"] == "fail" for m, _ in sub.rejects)


def test_runtime_labels_equal_direct_onnxruntime(val_run: dict[str, Any], effnet_path: Path, val_dir: Path) -> None:
    from edge.frames import read_image
    from edge.preprocess import preprocess

    spec = val_run["spec"]
    sess = ort.InferenceSession(str(effnet_path), providers=["CPUExecutionProvider"])
    by_src = {m["source_id"]: m["label"] for m in val_run["sub"].results}
    assert len(by_src) == 268
    for src, label in by_src.items():
        x = preprocess(read_image(val_dir / src, spec.channel_order), spec)[None]
        logits = sess.run(None, {spec.input_name: x})[0][0]
        assert spec.labels[int(np.argmax(logits))] == label, src


def test_deadline_miss_gives_failsafe_and_no_late_result(tmp_path: Path, effnet_path: Path, val_dir: Path) -> None:
    # 1 ms is below any ONNX Runtime call on this model: every part must get RES,<id>,F,TIMEOUT.
    s = _settings(tmp_path, effnet_path, val_dir / "crack", deadline_ms=1)
    with PtyPair(backend="socat") as pty:
        station = Station(s, plc_port=pty.a).start()
        sim = PlcSimulator(pty.b, rate_hz=20, count=8, answer_timeout_ms=500)
        report = sim.run(timeout=30)
        summary = station.stop()
    assert report.answered == 8 and not report.duplicates and not report.unexpected
    assert report.failsafe == {"TIMEOUT": 8}
    assert summary["failsafe_by_cause"] == {"TIMEOUT": 8}
    # Parts inspected after their deadline had their result refused by the part tracker (never sent);
    # parts still queued at their deadline were skipped. Either way the PLC saw exactly 8 RES.
    assert station.inspector.tracker.late_results <= 8


def test_exhausted_replay_answers_no_frame(tmp_path: Path, effnet_path: Path, val_dir: Path) -> None:
    # 11 crack images, 14 triggers: the last 3 parts have no frame and get the fail-safe NO_FRAME.
    s = _settings(tmp_path, effnet_path, val_dir / "crack", deadline_ms=500)
    with PtyPair(backend="socat") as pty:
        station = Station(s, plc_port=pty.a).start()
        sim = PlcSimulator(pty.b, rate_hz=20, count=14, answer_timeout_ms=1000)
        report = sim.run(timeout=30)
        station.stop()
    assert report.answered == 14 and report.ok
    assert report.failsafe == {"NO_FRAME": 3}


def test_free_run_sends_res_with_sequence_numbers(tmp_path: Path, effnet_path: Path, val_dir: Path) -> None:
    # free_run: no TRG; every 2nd frame of the 11 crack images is inspected -> 6 RES,<seq>,... telegrams.
    s = _settings(tmp_path, effnet_path, val_dir / "crack", mode="free_run", free_run_every=2)
    with PtyPair(backend="socat") as pty:
        sim = PlcSimulator(pty.b, rate_hz=1, count=0, duration_s=3.0)
        sim.start()
        station = Station(s, plc_port=pty.a).start()
        assert station.inspector.finished.wait(30)
        summary = station.stop()
        sim.wait_done(10)
        report = sim.close()
    assert summary["parts"] == 6
    assert report.free_run_results == 6 and report.bad_checksum == 0
    assert summary["rejects_by_reason"] == {"crack": 6}
