"""`edgeqc run` as a service (issue 4's "Done when"), under a stand-in for systemd.

A real `edgeqc run` process with NOTIFY_SOCKET pointing at a datagram listener, a PLC simulator
on a socat pty pair triggering parts throughout, and a ZeroMQ SUB watching which model answered:
READY only once camera and PLC port are up, WATCHDOG from the loop, SIGHUP swaps to a new model
with no part lost or answered twice, a corrupt new model keeps the old one, SIGTERM drains and
exits 0.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from edge.app import DEMO_MODEL
from edge.plc.pty import PtyPair
from edge.plc.simulator import PlcSimulator

sys.path.insert(0, str(Path(__file__).parent))
from notify_listener import NotifyListener  # noqa: E402

pytestmark = pytest.mark.timeout(240)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(path: Path, model: Path, port: str, zmq_ep: str, tmp: Path) -> None:
    path.write_text(f"""
station_id = "svc-test"
[camera]
source = "demo"
loop = true
[model]
path = "{model}"
[plc]
port = "{port}"
deadline_ms = 2000
[zmq]
endpoint = "{zmq_ep}"
status_interval_ms = 200
[archive]
path = "{tmp / 'archive'}"
[metrics]
port = 0
""")


def test_ready_watchdog_reload_keep_old_on_corrupt_and_drain(tmp_path: Path) -> None:
    model_a = tmp_path / "model_a.onnx"
    model_b = tmp_path / "model_b.onnx"
    shutil.copy(DEMO_MODEL, model_a)
    shutil.copy(DEMO_MODEL, model_b)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(DEMO_MODEL.read_bytes()[:5000])
    cfg = tmp_path / "station.toml"
    zmq_ep = f"tcp://127.0.0.1:{_free_port()}"

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.connect(zmq_ep)
    sub.setsockopt(zmq.SUBSCRIBE, b"result")
    sub.setsockopt(zmq.SUBSCRIBE, b"status")
    models: list[str] = []
    statuses: list[dict[str, object]] = []
    stop = threading.Event()

    def _listen() -> None:
        while not stop.is_set():
            if sub.poll(100):
                topic, body = sub.recv_multipart()[:2]
                msg = json.loads(body)
                (models.append(msg["model"]["name"]) if topic == b"result" else statuses.append(msg))

    listener = threading.Thread(target=_listen, daemon=True)
    listener.start()

    with PtyPair(backend="socat") as pty, NotifyListener(tmp_path) as sd:
        _config(cfg, model_a, pty.a, zmq_ep, tmp_path)
        env = {**os.environ, **sd.env(watchdog_s=2.0), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            ready = sd.wait_for("READY", timeout=60)
            assert ready["READY"] == "1" and "camera ok" in ready.get("STATUS", "")
            deadline = time.monotonic() + 10  # ZeroMQ slow joiner: subscribed once a status arrives
            while not statuses and time.monotonic() < deadline:
                time.sleep(0.05)
            assert statuses, "no status message: the SUB never connected"
            sim = PlcSimulator(pty.b, rate_hz=20, count=200, answer_timeout_ms=3000)
            sim.start()
            time.sleep(2.0)
            assert sd.count("WATCHDOG") >= 1  # pinged from the inspection loop (every WATCHDOG_USEC/2)

            _config(cfg, model_b, pty.a, zmq_ep, tmp_path)  # a new model, while triggers keep coming
            proc.send_signal(signal.SIGHUP)
            sd.wait_for("RELOADING", timeout=30)
            deadline = time.monotonic() + 30
            while "model_b.onnx" not in models and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "model_b.onnx" in models

            _config(cfg, corrupt, pty.a, zmq_ep, tmp_path)  # a corrupt model: keep model_b
            n_ready = sd.count("READY")
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while sd.count("READY") == n_ready and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)
            assert any("reload failed" in str(s.get("reload_error")) for s in statuses)
            assert sim.wait_done(60)
            report = sim.close()
            assert report.triggers_sent == 200 and report.answered == 200
            assert (report.missing, report.duplicates, report.unexpected, report.late) == ([], [], [], [])
            assert report.bad_checksum == 0 and not report.failsafe
            deadline = time.monotonic() + 10  # outputs follow the RES (written first) by design
            while len(models) < 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            n_after = len(models)
            assert set(models[-20:]) == {"model_b.onnx"}  # still answering with the last good model
            assert proc.poll() is None

            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0, out
            assert sd.count("STOPPING") == 1
            assert "parts 200" in out
            assert n_after >= 200
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            stop.set()
            listener.join(2)
            sub.close(0)
            ctx.term()
