"""``edgeqc demo`` / ``edgeqc run`` (edge/demo/run.py) with real components.

A failed start closes the station and ends the socat process of the demo PLC's pty pair; corrupt
images of a folder replay are counted in the printed summary, the ``--json`` summary and the
metrics; ``edgeqc run`` on the demo defaults logs as ``run`` and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

import edge.app
import edge.plc.pty
from edge.capture import CaptureError
from edge.demo import synth
from edge.demo.run import run_station
from edge.metrics import scrape_values
from edge.settings import Settings, load_settings

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[1]


def _settings(tmp: Path, source: str | Path, **camera: Any) -> Settings:
    return load_settings(
        station_id="test",
        camera={"source": str(source), **camera},
        plc={"port": "demo"},
        zmq={"endpoint": "tcp://127.0.0.1:0"},
        archive={"path": str(tmp / "archive")},
        metrics={"port": 0},
    )


class _Made:
    """The PtyPair and Station objects run_station creates (subclasses record their instances)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ptys: list[Any] = []
        self.stations: list[Any] = []
        made = self

        class Pty(edge.plc.pty.PtyPair):
            def __init__(self, *a: Any, **k: Any) -> None:
                super().__init__(*a, **k)
                made.ptys.append(self)

        class Station(edge.app.Station):
            def __init__(self, *a: Any, **k: Any) -> None:
                made.stations.append(self)
                super().__init__(*a, **k)

        monkeypatch.setattr(edge.plc.pty, "PtyPair", Pty)
        monkeypatch.setattr(edge.app, "Station", Station)

    def assert_all_closed(self) -> None:
        assert len(self.ptys) == 1 and len(self.stations) == 1
        pty, st = self.ptys[0], self.stations[0]
        assert pty._closed
        if pty._proc is not None:  # socat backend: the process ended and was reaped, no orphan
            assert pty._proc.returncode is not None
            assert not Path(f"/proc/{pty._proc.pid}").exists()
        assert st._closers == [] and st.source.state == "closed"


@pytest.mark.parametrize("case", ["empty_folder_demo", "not_a_video_demo", "not_a_video_run"])
def test_failed_start_closes_station_and_pty(case: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    made = _Made(monkeypatch)
    if case == "empty_folder_demo":
        (tmp_path / "empty").mkdir()
        src, match = tmp_path / "empty", "contains no images"  # was: ValueError from PlcSimulator(count=0)
    else:
        (tmp_path / "notes.mp4").write_text("not a video\n")
        src, match = tmp_path / "notes.mp4", "cannot decode video file"
    with pytest.raises(CaptureError, match=match) as exc:
        run_station(_settings(tmp_path, src), until_signal=case.endswith("_run"), rate_hz=50)
    assert str(exc.value).startswith("camera.source: ") and str(src) in str(exc.value)
    made.assert_all_closed()


def test_demo_and_run_give_the_same_message_for_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[camera]\nsource = "{tmp_path / "empty"}"\n[metrics]\nport = 0\n'
                   f'[zmq]\nendpoint = "tcp://127.0.0.1:0"\n[archive]\npath = "{tmp_path / "arc"}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEQC_", "NOTIFY_SOCKET"))}
    want = (f"edgeqc: CaptureError: camera.source: folder {tmp_path / 'empty'} contains no images "
            "(searched recursively for .bmp, .jpeg, .jpg, .png, .tif, .tiff)")
    for cmd in ("demo", "run"):
        p = subprocess.run([sys.executable, "-m", "edge.cli", cmd, "--config", str(cfg)], cwd=REPO, env=env,
                           check=False, capture_output=True, text=True, timeout=60)
        assert p.returncode == 1, (cmd, p.stderr)
        assert p.stderr.rstrip().splitlines()[-1] == want, cmd
        assert "Traceback" not in p.stderr


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def corrupt_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``edgeqc demo`` over 4 good renders + a truncated JPEG + a text file named .jpg."""
    tmp = tmp_path_factory.mktemp("corrupt")
    folder = tmp / "parts"
    rng = np.random.default_rng(0)
    for i, label in enumerate(("free", "free", "crack", "free")):
        (folder / label).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / label / f"p{i}.png"), synth.render_part(rng, label))
    ok, jpg = cv2.imencode(".jpg", synth.render_part(rng, "free"))
    assert ok
    (folder / "free" / "p4_truncated.jpg").write_bytes(jpg.tobytes()[: len(jpg) // 2])
    (folder / "free" / "p5_text.jpg").write_text("this is not an image\n")

    handler = _Records()
    records = handler.records
    insp = logging.getLogger("edgeqc.inspection")
    insp.addHandler(handler)
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        made = _Made(mp)
        try:
            with contextlib.redirect_stdout(out):
                rc = run_station(_settings(tmp, folder), json_out=str(tmp / "run.json"), rate_hz=20,
                                 until_signal=False)
        finally:
            insp.removeHandler(handler)
    station = made.stations[0]
    return {"rc": rc, "stdout": out.getvalue(), "json": json.loads((tmp / "run.json").read_text()),
            "metrics": scrape_values(station.metrics.render().decode()), "records": records, "made": made,
            "status": station.inspector.status()}


def test_corrupt_files_counted_in_printed_summary(corrupt_run: dict[str, Any]) -> None:
    lines = corrupt_run["stdout"].splitlines()
    # 6 files planned -> 6 triggers; 4 frames, then the replay has ended: 2 fail-safe NO_FRAME
    assert lines[0].startswith("parts 6  ")
    assert "fail-safe answers: NO_FRAME 2" in lines
    assert "capture: frames 4, corrupt 2 (unreadable image files skipped; the log names each)" in lines
    corrupt_run["made"].assert_all_closed()


def test_corrupt_files_counted_in_json_and_metrics(corrupt_run: dict[str, Any]) -> None:
    assert corrupt_run["json"]["summary"]["capture"] == {"replay": True, "frames": 4, "corrupt": 2,
                                                         "reconnects": 0, "dropped_stale": 0}
    m = corrupt_run["metrics"]
    assert m["edgeqc_capture_corrupt_frames_total"] == 2
    assert m["edgeqc_capture_frames_total"] == 4
    assert m["edgeqc_capture_dropped_stale_frames_total"] == 0
    assert corrupt_run["status"]["corrupt_frames"] == 2  # the ZeroMQ status topic's field


def test_failsafe_log_line_names_the_part_once(corrupt_run: dict[str, Any]) -> None:
    from edge.cli import _JournalFormatter

    lines = [_JournalFormatter().format(r) for r in corrupt_run["records"] if "fail-safe" in r.getMessage()]
    assert lines == ["WARNING inspection part=P000005: fail-safe NO_FRAME",
                     "WARNING inspection part=P000006: fail-safe NO_FRAME"]


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(x) for x in (task / "children").read_text().split()]
    return kids


def _start_on_demo_defaults(command: str, tmp_path: Path, group: bool = False) -> subprocess.Popen[str]:
    """``edgeqc <command>`` on the built-in defaults in a subprocess, with free ports, its archive in
    ``tmp_path`` and no EDGEQC_/NOTIFY_SOCKET from the test's environment; ``group``: in a process
    group of its own (as a shell's foreground job), so ``os.killpg`` plays a terminal's Ctrl-C."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[metrics]\nport = 0\n[zmq]\nendpoint = "tcp://127.0.0.1:0"\n'
                   f'[archive]\npath = "{tmp_path / "arc"}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEQC_", "NOTIFY_SOCKET"))}
    return subprocess.Popen([sys.executable, "-m", "edge.cli", command, "--config", str(cfg)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=group)


def test_run_on_demo_defaults_logs_as_run_and_stops_clean(tmp_path: Path) -> None:
    if not Path("/proc/self/task").is_dir() or not (edge.plc.pty.shutil.which("socat")):
        pytest.skip("needs Linux /proc and socat")
    p = _start_on_demo_defaults("run", tmp_path)
    try:
        assert p.stderr is not None
        err: list[str] = []
        while not any("PLC link" in line and " open" in line for line in err):  # signal handlers are in place
            line = p.stderr.readline()
            assert line, "".join(err)
            err.append(line)
        socat = [k for k in _children(p.pid) if Path(f"/proc/{k}/comm").read_text().strip() == "socat"]
        time.sleep(0.3)  # a few parts
        p.send_signal(signal.SIGTERM)
        out, rest = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err_text = "".join(err) + rest
    assert p.returncode == 0, err_text
    assert 'INFO run: camera.source = plc.port = "demo": the demo parts replay in a loop' in err_text
    assert "INFO run: PLC simulator on " in err_text and "continuous triggers at 10/s" in err_text
    assert "demo:" not in err_text
    # the simulated PLC keeps its port open until the station stopped: a clean stop is not a loss
    assert "lost" not in err_text and "ERROR" not in err_text, err_text
    assert "\ncapture: frames " in out and "corrupt 0" in out
    assert len(socat) == 1 and not Path(f"/proc/{socat[0]}").exists()


def test_ctrl_c_on_run_reaches_the_station_not_its_demo_plc(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals the whole foreground process group. The demo PLC's socat relay
    used to be in it and died at once, under the station: "PLC port lost" on every Ctrl-C, and a
    part being answered could lose its RES. socat now runs in a session of its own and is closed
    by edgeqc after the station stopped."""
    if not Path("/proc/self/task").is_dir() or not (edge.plc.pty.shutil.which("socat")):
        pytest.skip("needs Linux /proc and socat")
    p = _start_on_demo_defaults("run", tmp_path, group=True)
    try:
        assert p.stderr is not None
        err: list[str] = []
        while not any("PLC link" in line and " open" in line for line in err):
            line = p.stderr.readline()
            assert line, "".join(err)
            err.append(line)
        time.sleep(0.5)  # a few parts
        os.killpg(p.pid, signal.SIGINT)
        out, rest = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    err_text = "".join(err) + rest
    assert p.returncode == 0, err_text
    assert "lost" not in err_text and "ERROR" not in err_text and "NOT SENT" not in err_text, err_text
    assert "\ncapture: frames " in out


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a reparented zombie may wait for a reaper that never comes)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_demo_start_leaves_no_socat(sig: signal.Signals, tmp_path: Path) -> None:
    """A signal as soon as the demo's socat exists (the station is not built yet): the demo ends as
    that signal says (SIGTERM: killed by it; SIGINT: exit 130) and its socat is gone."""
    if not Path("/proc/self/task").is_dir() or not (edge.plc.pty.shutil.which("socat")):
        pytest.skip("needs Linux /proc and socat")
    p = _start_on_demo_defaults("demo", tmp_path)
    socat: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not socat and p.poll() is None and time.monotonic() < deadline:
            for k in _children(p.pid):
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{k}/comm").read_text().strip() == "socat":
                        socat.append(k)
            time.sleep(0.001)
        assert socat, "the demo never started socat"
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    try:
        assert p.returncode == (-signal.SIGTERM if sig == signal.SIGTERM else 130), err
        assert f"INFO demo: signal {sig.name} during start-up: stopping" in err
        assert "Traceback" not in err and "capture: frames" not in out  # no summary of a run that never ran
        assert not _alive(socat[0])
    finally:
        if _alive(socat[0]):  # the orphan this test exists to catch: do not leave it running
            os.kill(socat[0], signal.SIGKILL)
