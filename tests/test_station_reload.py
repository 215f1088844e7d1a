"""SIGHUP reloads: the last one wins, an older load that finishes later never runs, and an idle
line swaps without waiting for a part (real Station, real ONNX Runtime on the demo model)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import edge.app as app
from edge.app import DEMO_MODEL, Station
from edge.settings import load_settings


def _write(cfg: Path, model: Path) -> None:
    cfg.write_text(f"""
[camera]
source = "demo"
loop = true
[model]
path = "{model}"
[plc]
enabled = false
[zmq]
enabled = false
[archive]
enabled = false
[metrics]
enabled = false
""")


def test_two_quick_reloads_the_last_one_wins(tmp_path: Path, monkeypatch) -> None:
    a, b, c = (tmp_path / f"model_{n}.onnx" for n in "abc")
    for m in (a, b, c):
        shutil.copy(DEMO_MODEL, m)
    cfg = tmp_path / "station.toml"
    _write(cfg, a)
    opened: list = []
    real_open = app.open_backend_for

    def slow_open(settings):  # model_b loads slowly: without one-at-a-time reloads it would finish last
        if Path(settings.model.path).name == "model_b.onnx":
            time.sleep(1.0)
        backend = real_open(settings)
        opened.append(backend)
        return backend

    monkeypatch.setattr(app, "open_backend_for", slow_open)
    station = Station(load_settings(cfg))
    station.start()
    try:
        _write(cfg, b)
        first = threading.Thread(target=station.reload, args=(str(cfg),))
        first.start()
        time.sleep(0.2)  # the first reload is loading model_b
        _write(cfg, c)
        second = threading.Thread(target=station.reload, args=(str(cfg),))
        second.start()
        first.join(10)
        second.join(10)
        deadline = time.monotonic() + 5
        while station.inspector.model_info.name != "model_c.onnx" and time.monotonic() < deadline:
            time.sleep(0.05)  # no parts arrive: the idle loop swaps
        time.sleep(0.3)  # a reload still pending would be swapped in by now (idle loop: every 0.1 s)
        assert station.inspector.model_info.name == "model_c.onnx"
        assert station.inspector.stats["reloads"] >= 1
        names = [Path(be.model_path).name for be in opened]
        assert names[-1] == "model_c.onnx"  # read the file after the first reload was done
        for be in opened:
            if be is not station.inspector.backend:
                assert be._closed, f"{be.model_path} left open"
    finally:
        station.stop()
