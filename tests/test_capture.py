"""edge.capture with real components: image folders and MJPG videos written with OpenCV, the shared
val set, and a real MJPEG-over-HTTP stream on loopback read by OpenCV's FFmpeg backend (what an
IP camera delivers). One fake cv2-like capture (a read() that blocks forever, as on an unplugged
V4L2 device) tests the grabber's watchdog, which no real device can show on a CI box.

No timing assertions: time bounds below are hang detection only (a call that should give up after
its timeout must have returned), with generous margins.
"""

from __future__ import annotations

import http.server
import logging
import os
import re
import socketserver
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.capture import CaptureError, FolderSource, Frame, LiveSource, gstreamer_available, open_source
from edge.settings import CameraSettings

pytestmark = pytest.mark.timeout(60)


def cam(source: str | Path, **kw: object) -> CameraSettings:
    return CameraSettings(source=str(source), **kw)  # type: ignore[arg-type]


def drain(src, timeout: float = 2.0, limit: int = 10_000) -> list[Frame]:
    out = []
    for _ in range(limit):
        f = src.next_frame(timeout=timeout)
        if f is None:
            break
        out.append(f)
    return out


class StateLog:
    """on_state callback that lets a test wait for a state (bounded)."""

    def __init__(self) -> None:
        self.states: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, state: str) -> None:
        with self._cond:
            self.states.append(state)
            self._cond.notify_all()

    def wait_for(self, state: str, timeout: float = 10.0, after: int = 0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: state in self.states[after:], timeout)


# ---------------------------------------------------------------------------------- folders
@pytest.fixture()
def parts_dir(tmp_path: Path) -> Path:
    """good/, bad/ class folders with every image flavour plus two corrupt files."""
    root = tmp_path / "parts"
    (root / "good").mkdir(parents=True)
    (root / "bad").mkdir()
    red = np.zeros((6, 8, 3), np.uint8)
    red[:, :] = (0, 0, 255)  # BGR pure red
    cv2.imwrite(str(root / "good" / "a_red.png"), red)
    cv2.imwrite(str(root / "good" / "b.jpg"), np.full((6, 8, 3), 128, np.uint8))
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8)
    cv2.imwrite(str(root / "bad" / "c_gray.png"), gray)
    cv2.imwrite(str(root / "bad" / "d_16bit.png"), (np.arange(48, dtype=np.uint16) * 1000).reshape(6, 8))
    bgra = np.zeros((6, 8, 4), np.uint8)
    bgra[:, :] = (255, 0, 0, 77)  # BGR blue, alpha 77
    cv2.imwrite(str(root / "bad" / "e_bgra.png"), bgra)
    _ok, jpg = cv2.imencode(".jpg", np.full((64, 64, 3), 90, np.uint8))
    (root / "bad" / "f_truncated.jpg").write_bytes(jpg.tobytes()[: len(jpg) // 2])
    (root / "good" / "g_text.jpg").write_text("this is not a JPEG\n")
    cv2.imwrite(str(root / "top.png"), red)  # directly in the folder: no label
    return root


READABLE = ["bad/c_gray.png", "bad/d_16bit.png", "bad/e_bgra.png", "good/a_red.png", "good/b.jpg", "top.png"]


def test_folder_trigger_order_labels_corrupt_and_pixels(parts_dir: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="edgeqc")
    states = StateLog()
    with open_source(cam(parts_dir), channel_order="RGB", on_state=states) as src:
        assert src.is_replay
        frames = drain(src)
        assert src.next_frame(timeout=0.1) is None
        assert src.exhausted and src.state == "exhausted"
        stats = src.stats
    assert [f.source_id for f in frames] == READABLE
    assert [f.label for f in frames] == ["bad", "bad", "bad", "good", "good", None]
    assert [f.index for f in frames] == list(range(6))
    assert stats["corrupt"] == 2 and stats["frames"] == 6
    for name in ("f_truncated.jpg", "g_text.jpg"):  # one WARNING per corrupt file, from the capture
        warned = [(r.name, r.levelno) for r in caplog.records if name in r.getMessage()]
        assert warned == [("edgeqc.capture", logging.WARNING)], name
        msg = next(r.getMessage() for r in caplog.records if name in r.getMessage())
        assert msg.endswith("; skipped, counted in stats['corrupt']"), msg
    by_id = {f.source_id: f.image for f in frames}
    assert by_id["good/a_red.png"].shape == (6, 8, 3)
    assert by_id["good/a_red.png"][0, 0].tolist() == [255, 0, 0]
    assert by_id["bad/c_gray.png"].shape == (6, 8)
    assert by_id["bad/c_gray.png"].ravel().tolist() == list(range(48))
    assert by_id["bad/d_16bit.png"].dtype == np.uint16
    assert by_id["bad/d_16bit.png"].ravel().tolist() == [i * 1000 for i in range(48)]
    assert by_id["bad/e_bgra.png"].shape == (6, 8, 3)  # alpha dropped
    assert by_id["bad/e_bgra.png"][0, 0].tolist() == [0, 0, 255]  # blue in RGB
    assert states.states == ["ok", "exhausted", "closed"]


def test_folder_bgr_order_and_free_run_loop(parts_dir: Path) -> None:
    with open_source(cam(parts_dir, loop=True), channel_order="BGR") as src:
        it = src.frames()
        got = [next(it) for _ in range(len(READABLE) + 2)]
    assert [f.source_id for f in got] == READABLE + READABLE[:2]
    red = next(f for f in got if f.source_id == "good/a_red.png")
    assert red.image[0, 0].tolist() == [0, 0, 255]
    assert not src.exhausted and src.state == "closed"


def test_shared_val_folder_in_sorted_order(val_dir: Path) -> None:
    expected = sorted(
        p.relative_to(val_dir).as_posix() for p in val_dir.rglob("*") if p.suffix.lower() in (".jpg", ".png")
    )
    with open_source(cam(val_dir), channel_order="RGB") as src:
        frames = list(src.frames())
        assert src.exhausted
    assert len(frames) == 268 == len(expected)
    assert [f.source_id for f in frames] == expected
    assert [f.label for f in frames] == [s.split("/")[0] for s in expected]
    assert {f.label for f in frames} == {"blowhole", "break", "crack", "fray", "free", "uneven"}
    assert src.stats["corrupt"] == 0


def test_folder_disappearing_mid_run_goes_lost_and_resumes(tmp_path: Path) -> None:
    root = tmp_path / "line"
    root.mkdir()
    names = [f"p{i:02d}.png" for i in range(8)]
    for i, n in enumerate(names):
        cv2.imwrite(str(root / n), np.full((4, 4), i * 10, np.uint8))
    states = StateLog()
    with open_source(cam(root, reconnect_backoff_ms=[20, 50]), on_state=states) as src:
        got = [src.next_frame(timeout=2.0)]
        root.rename(tmp_path / "unmounted")  # the share goes away
        got += drain(src, timeout=0.3)  # the frames already read ahead, then None
        assert states.wait_for("lost")
        t0 = time.monotonic()
        assert src.next_frame(timeout=0.2) is None
        assert time.monotonic() - t0 < 5  # hang detection only
        assert not src.exhausted and src.state == "lost"
        (tmp_path / "unmounted").rename(root)
        assert states.wait_for("ok", after=states.states.index("lost"))
        got += drain(src, timeout=2.0)
        assert src.exhausted
        assert src.stats["reconnects"] >= 1
    assert [f.source_id for f in got] == names  # nothing skipped, nothing twice
    assert [int(f.image[0, 0]) for f in got] == [i * 10 for i in range(8)]


# ---------------------------------------------------------------------------------- video
def write_video(path: Path, n: int) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25.0, (64, 48))
    assert w.isOpened()
    for i in range(n):
        w.write(np.full((48, 64, 3), i * 20, np.uint8))  # frame index in the pixel value
    w.release()


def test_video_file_trigger_and_free_run(tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    write_video(clip, 10)
    with open_source(cam(clip)) as src:
        assert src.is_replay
        frames = drain(src)
        assert src.exhausted and src.next_frame(timeout=0.1) is None
    assert [f.source_id for f in frames] == [f"clip.avi#frame{i}" for i in range(10)]
    assert [round(float(f.image.mean()) / 20) for f in frames] == list(range(10))
    assert all(f.image.shape == (48, 64, 3) and f.label is None for f in frames)
    with open_source(cam(clip, fps=200.0)) as src:
        assert [f.index for f in src.frames()] == list(range(10))


def test_video_file_loop(tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    write_video(clip, 3)
    with open_source(cam(clip, loop=True)) as src:
        ids = [src.next_frame(timeout=2.0).source_id for _ in range(7)]  # type: ignore[union-attr]
    assert ids == ["clip.avi#frame0", "clip.avi#frame1", "clip.avi#frame2"] * 2 + ["clip.avi#frame0"]


def test_video_deleted_mid_run(tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    write_video(clip, 3)
    states = StateLog()
    with open_source(cam(clip, loop=True, reconnect_backoff_ms=[20, 50]), on_state=states) as src:
        got = [src.next_frame(timeout=2.0)]
        clip.unlink()  # the open file keeps playing to its end; the next loop pass finds it gone
        got += [src.next_frame(timeout=2.0) for _ in range(2)]
        assert states.wait_for("lost")
        assert src.next_frame(timeout=0.2) is None and not src.exhausted
        write_video(tmp_path / "new.avi", 3)
        (tmp_path / "new.avi").rename(clip)
        assert states.wait_for("ok", after=states.states.index("lost"))
        got.append(src.next_frame(timeout=2.0))
    assert [f.source_id for f in got] == [f"clip.avi#frame{i}" for i in (0, 1, 2, 0)]  # type: ignore[union-attr]
    assert src.stats["reconnects"] >= 1


# ---------------------------------------------------------------------------------- open errors
def test_open_errors_are_clear(tmp_path: Path) -> None:
    if not os.path.exists("/dev/video9"):
        with pytest.raises(CaptureError, match=r"/dev/video9 does not exist.*cable"):
            open_source(cam("/dev/video9"))
        with pytest.raises(CaptureError, match=r"/dev/video9 does not exist"):
            open_source(cam("9"))
    with pytest.raises(CaptureError, match="no such file or folder"):
        open_source(cam(tmp_path / "missing"))
    with pytest.raises(CaptureError, match="demo_folder"):
        open_source(cam("demo"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaptureError, match="contains no images"):
        open_source(cam(tmp_path / "empty")).start()
    bad = tmp_path / "clip.mp4"
    bad.write_text("not a video")
    with pytest.raises(CaptureError, match="cannot decode video file"):
        open_source(cam(bad)).start()
    with pytest.raises(ValueError, match="channel_order"):
        open_source(cam(tmp_path), channel_order="RGBA")
    if not gstreamer_available():
        with pytest.raises(CaptureError, match="JetPack"):
            open_source(cam("nvarguscamerasrc ! nvvidconv ! appsink"))


def test_demo_resolves_to_given_folder_with_optional_play_order(parts_dir: Path) -> None:
    with open_source(cam("demo"), demo_folder=parts_dir) as src:
        assert isinstance(src, FolderSource)
        assert src.next_frame(timeout=2.0).source_id == READABLE[0]  # type: ignore[union-attr]

    def by_name(folder: Path) -> list[Path]:
        return sorted(folder.rglob("*.png"), key=lambda p: p.name)

    with open_source(cam("demo"), demo_folder=parts_dir, lister=by_name) as src:
        ids = [f.source_id for f in drain(src)]
    assert ids == ["good/a_red.png", "bad/c_gray.png", "bad/d_16bit.png", "bad/e_bgra.png", "top.png"]


def test_unreachable_stream_fails_at_start_within_bound() -> None:
    with socketserver.TCPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler) as s:
        port = s.server_address[1]  # bound, then closed: nothing listens there
    src = open_source(cam(f"http://user:secret@127.0.0.1:{port}/video", open_timeout_ms=500))
    assert "secret" not in src.name
    t0 = time.monotonic()
    with pytest.raises(CaptureError, match=r"cannot open camera source .*Check the URL") as err:
        src.start()
    assert "secret" not in str(err.value)
    # worded truthfully: refused at once, not "within <open timeout> ms"
    assert re.search(r"could not open http://user:\*\*\*@127\.0\.0\.1:\d+/video: OpenCV gave up after \d+ ms "
                     r"\(connection refused, no stream, or no answer; open timeout 500 ms\)", str(err.value))
    assert "within 500 ms" not in str(err.value)
    assert time.monotonic() - t0 < 10  # hang detection only
    assert src.state == "closed"


# ---------------------------------------------------------------------------------- live stream
class MjpegServer:
    """A real MJPEG-over-HTTP camera on loopback; frame n shows n in its pixel values."""

    def __init__(self, fps: float = 25.0) -> None:
        self.fps = fps
        self.sent = 0
        self.paused = threading.Event()
        self.stopped = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while not outer.stopped.is_set():
                        if outer.paused.is_set():
                            outer.stopped.wait(0.02)
                            continue
                        n = outer.sent
                        outer.sent += 1
                        _ok, buf = cv2.imencode(".jpg", MjpegServer.image(n))
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(buf) + buf.tobytes() + b"\r\n")
                        outer.stopped.wait(1.0 / outer.fps)
                except OSError:
                    pass

        self.httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def image(n: int) -> np.ndarray:
        img = np.zeros((64, 64, 3), np.uint8)
        img[:32] = (n % 50) * 5
        img[32:] = (n // 50) * 5
        return img

    @staticmethod
    def number(img: np.ndarray) -> int:
        return round(float(img[:32].mean()) / 5) + 50 * round(float(img[32:].mean()) / 5)

    def close(self) -> None:
        self.stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def mjpeg():
    server = MjpegServer()
    yield server
    server.close()


def test_stream_slow_consumer_gets_only_newer_frames(mjpeg: MjpegServer) -> None:
    with open_source(cam(mjpeg.url), channel_order="BGR") as src:
        assert not src.is_replay
        prev: Frame | None = None
        for _ in range(5):
            t_request = time.monotonic()
            f = src.latest(after=t_request, timeout=3.0)
            assert f is not None
            assert f.t_capture > t_request  # captured after the request, never an older frame
            assert f.source_id == f"{src.name}#{f.index}"
            if prev is not None:
                assert f.index > prev.index
                assert MjpegServer.number(f.image) > MjpegServer.number(prev.image)
            prev = f
            time.sleep(0.2)  # slow consumer: the grabber keeps replacing the newest frame
        assert src.stats["dropped_stale"] >= 1
        assert src.stats["frames"] > 5
        # after=None: the newest frame not handed out before; never the same frame twice
        a = src.latest(timeout=3.0)
        b = src.latest(timeout=3.0)
        assert a is not None and b is not None and b.index > a.index


def test_stream_stall_goes_lost_reconnects_and_recovers(mjpeg: MjpegServer) -> None:
    states = StateLog()
    camera = cam(mjpeg.url, read_timeout_ms=300, open_timeout_ms=500, reconnect_backoff_ms=[50, 100])
    with open_source(camera, on_state=states) as src:
        assert src.latest(timeout=3.0) is not None
        assert src.state == "ok"
        mjpeg.paused.set()  # camera stops delivering, connection stays up
        assert states.wait_for("lost")
        t0 = time.monotonic()
        assert src.latest(after=time.monotonic(), timeout=0.3) is None
        assert time.monotonic() - t0 < 5  # hang detection only
        deadline = time.monotonic() + 10
        while src.stats["reconnects"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert src.stats["reconnects"] >= 1
        mark = len(states.states)
        mjpeg.paused.clear()
        assert states.wait_for("ok", after=mark)
        t_back = time.monotonic()
        f = src.latest(after=t_back, timeout=3.0)
        assert f is not None and f.t_capture > t_back
    assert states.states == ["ok", "lost", "ok", "closed"]  # no flapping while reopening


# ---------------------------------------------------------------------------------- hung device
class BlockingCapture:
    """cv2.VideoCapture stand-in: ``good`` frames, then read() blocks (dead V4L2 device)."""

    def __init__(self, good: int, unblock: threading.Event) -> None:
        self.good = good
        self.unblock = unblock
        self.released = False

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.good <= 0:
            self.unblock.wait()
            return False, None
        self.good -= 1
        time.sleep(0.01)
        return True, np.zeros((4, 4, 3), np.uint8)

    def release(self) -> None:
        self.released = True


def test_blocked_read_is_abandoned_and_device_reopened() -> None:
    unblock = threading.Event()
    plugged = threading.Event()
    caps: list[BlockingCapture] = []

    def opener() -> BlockingCapture:
        if caps and not plugged.is_set():
            raise CaptureError("/dev/video0 is gone (unplugged?)")
        caps.append(BlockingCapture(good=5 if len(caps) == 0 else 10_000, unblock=unblock))
        return caps[-1]

    states = StateLog()
    camera = cam("0", read_timeout_ms=200, open_timeout_ms=500, reconnect_backoff_ms=[20, 40])
    src = LiveSource("/dev/video0", opener, camera, on_state=states)
    try:
        src.start()
        assert src.latest(timeout=2.0) is not None
        assert states.wait_for("lost")  # read() hangs: the watchdog gives up on it
        t0 = time.monotonic()
        assert src.latest(after=time.monotonic(), timeout=0.2) is None
        assert time.monotonic() - t0 < 5  # hang detection only
        deadline = time.monotonic() + 10
        while src.stats["reconnects"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert src.stats["reconnects"] >= 2  # reopen attempts while unplugged
        mark = len(states.states)
        plugged.set()
        assert states.wait_for("ok", after=mark)
        assert src.latest(after=time.monotonic(), timeout=2.0) is not None
        assert not caps[0].released  # still stuck in read(): abandoned, not joined
        assert states.states == ["ok", "lost", "ok"]
    finally:
        t0 = time.monotonic()
        src.close()
        assert time.monotonic() - t0 < 5  # close never waits for the stuck read
        unblock.set()
    deadline = time.monotonic() + 5
    while not caps[0].released and time.monotonic() < deadline:
        time.sleep(0.01)
    assert caps[0].released and caps[-1].released  # the stuck worker releases once read() returns
