"""Metrics: feed real results, scrape /metrics over real HTTP on loopback, check exact values."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import zmq

from edge.archive import RejectArchive
from edge.decision import Verdict
from edge.metrics import MetricsSink, scrape_values
from edge.publish import Publisher
from edge.result import InspectionResult, ModelInfo, failsafe_verdict
from edge.settings import ArchiveSettings, MetricsSettings, ZmqSettings

LABELS = ("blowhole", "crack", "free")
MODEL = ModelInfo("model.onnx", "cd" * 32, "int8", "tensorrt")


def result(seq: int, verdict: Verdict, plc_ms: float, failsafe: str | None = None) -> InspectionResult:
    lat = {"plc": plc_ms} if failsafe else {"capture": 3.0, "preprocess": 0.8, "infer": 12.0, "decide": 0.01,
                                            "plc": plc_ms, "total": plc_ms - 0.1}
    return InspectionResult(seq=seq, part_id=f"A{seq}", station_id="line-3", trigger_ts=1_764_470_000.0 + seq,
                            verdict=verdict, labels=LABELS, latency_ms=lat, model=MODEL, failsafe=failsafe,
                            frame=None if failsafe else np.zeros((8, 8, 3), np.uint8))


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return scrape_values(resp.read().decode())


class InspectorStandIn:
    """The attributes MetricsSink.bind reads from edge.inspection.Inspector."""

    def __init__(self, sinks: list[Any]) -> None:
        self.sinks = sinks
        self.stats = {"outputs_dropped": 2, "reloads": 1, "reload_failures": 1, "infer_errors": 0}
        self.source = SimpleNamespace(stats={"frames": 10, "reconnects": 3})
        self.model_info = ModelInfo("new.engine", "ef" * 32, "fp16", "tensorrt")

    def status(self) -> dict[str, Any]:
        return {"camera": "lost", "plc": "ok", "model": "ok"}


def test_scrape_after_results(tmp_path: Path) -> None:
    m = MetricsSink(MetricsSettings(port=0), station_id="line-3")
    port = m.start_http()  # loopback by default
    try:
        assert m.settings.host == "127.0.0.1" and port > 0
        m.handle(result(1, Verdict(True, "free", 0.98, ""), 18.0))
        m.handle(result(2, Verdict(True, "free", 0.97, ""), 22.0))
        m.handle(result(3, Verdict(False, "crack", 0.91, "crack"), 40.0))
        m.handle(result(4, Verdict(False, "free", 0.41, "uncertain"), 120.0))
        m.handle(result(5, failsafe_verdict("TIMEOUT"), 251.0, failsafe="TIMEOUT"))
        m.inc_serial_reconnects(2)
        m.set_camera_state("ok")
        m.set_plc_state("lost")
        v = scrape(port)
        assert v["edgeqc_parts_total"] == 5
        assert v["edgeqc_passes_total"] == 2
        assert v['edgeqc_rejects_total{reason="crack"}'] == 1
        assert v['edgeqc_rejects_total{reason="uncertain"}'] == 1
        assert v['edgeqc_rejects_total{reason="TIMEOUT"}'] == 1
        assert v['edgeqc_failsafe_total{cause="TIMEOUT"}'] == 1
        assert v['edgeqc_failsafe_total{cause="NO_FRAME"}'] == 0
        # per-stage histograms: 4 inspected parts (the fail-safe carries only 'plc')
        assert v['edgeqc_stage_latency_seconds_count{stage="infer"}'] == 4
        assert v['edgeqc_stage_latency_seconds_sum{stage="infer"}'] == pytest.approx(0.048)
        assert v['edgeqc_stage_latency_seconds_bucket{le="0.02",stage="infer"}'] == 4
        assert v['edgeqc_stage_latency_seconds_bucket{le="0.01",stage="infer"}'] == 0
        # end to end (trigger -> telegram): 18, 22, 40, 120, 251 ms
        assert v["edgeqc_trigger_to_telegram_seconds_count"] == 5
        assert v['edgeqc_trigger_to_telegram_seconds_bucket{le="0.02"}'] == 1
        assert v['edgeqc_trigger_to_telegram_seconds_bucket{le="0.05"}'] == 3
        assert v['edgeqc_trigger_to_telegram_seconds_bucket{le="0.25"}'] == 4
        assert v['edgeqc_trigger_to_telegram_seconds_bucket{le="0.3"}'] == 5
        assert v["edgeqc_trigger_to_telegram_seconds_sum"] == pytest.approx(0.451)
        assert v["edgeqc_serial_reconnects_total"] == 2 and v["edgeqc_camera_reconnects_total"] == 0
        assert v['edgeqc_camera_state{state="ok"}'] == 1 and v['edgeqc_camera_state{state="lost"}'] == 0
        assert v['edgeqc_plc_state{state="lost"}'] == 1
        key = ('edgeqc_model_info{backend="tensorrt",name="model.onnx",precision="int8",sha256="' + "cd" * 32 + '"}')
        assert v[key] == 1
        assert v['edgeqc_station_info{station_id="line-3",version="' + m.version + '"}'] == 1
        assert "process_resident_memory_bytes" in v or "process_virtual_memory_bytes" in v
    finally:
        m.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_bound_components_are_read_at_scrape_time(tmp_path: Path) -> None:
    ctx = zmq.Context()
    pub = Publisher(ZmqSettings(endpoint="tcp://127.0.0.1:*"), context=ctx)
    arc = RejectArchive(ArchiveSettings(path=str(tmp_path / "arc"), max_bytes=10**9, max_age_days=10**4))
    m = MetricsSink(MetricsSettings(port=0), process_metrics=False)
    try:
        m.bind(InspectorStandIn([pub, arc, m]))
        m.watch_plc(SimpleNamespace(stats={"reconnects": 4}))
        m.inc_camera_reconnects()
        pub.stats["dropped"] = 7
        for seq in (1, 2):
            r = result(seq, Verdict(False, "crack", 0.9, "crack"), 30.0)
            m.handle(r)
            arc.handle(r)
        assert arc.flush(10.0)
        port = m.start_http("127.0.0.1", 0)
        v = scrape(port)
        assert v["edgeqc_camera_reconnects_total"] == 4  # 3 from the source + 1 reported
        assert v["edgeqc_capture_frames_total"] == 10  # the source's counters; one it lacks is 0
        assert v["edgeqc_capture_corrupt_frames_total"] == 0
        assert v["edgeqc_serial_reconnects_total"] == 4
        assert v["edgeqc_zmq_dropped_total"] == 7
        assert v["edgeqc_outputs_dropped_total"] == 2
        assert v['edgeqc_reloads_total{outcome="ok"}'] == 1 and v['edgeqc_reloads_total{outcome="failed"}'] == 1
        assert v['edgeqc_camera_state{state="lost"}'] == 1 and v['edgeqc_model_state{state="ok"}'] == 1
        key = 'edgeqc_model_info{backend="tensorrt",name="new.engine",precision="fp16",sha256="' + "ef" * 32 + '"}'
        assert v[key] == 1  # the inspector's current model (after a reload), not the results' one
        assert v["edgeqc_archive_records"] == 2 and v["edgeqc_archive_written_total"] == 2
        assert v["edgeqc_archive_bytes"] == arc.stats["bytes"] > 0
        assert v['edgeqc_archive_dropped_total{cause="queue_full"}'] == 0
        assert v['edgeqc_archive_errors_total{kind="enospc"}'] == 0
        assert not any(k.startswith("process_") for k in v)
    finally:
        m.close()
        arc.close(5.0)
        pub.close()
        ctx.term()


def test_bad_state_and_busy_port() -> None:
    m = MetricsSink()
    with pytest.raises(ValueError, match=r"camera state 'gone': expected one of \('ok', 'lost'\)"):
        m.set_camera_state("gone")
    port = m.start_http("127.0.0.1", 0)
    other = MetricsSink()
    try:
        with pytest.raises(OSError, match=rf"metrics.host/port = 127.0.0.1:{port}: cannot bind"):
            other.start_http("127.0.0.1", port)
    finally:
        m.close()
        other.close()
