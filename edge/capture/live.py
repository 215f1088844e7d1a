"""Cameras and streams: a grabber thread keeps only the newest frame; a watchdog reopens.

OpenCV buffers network streams and V4L2 drivers queue frames, so a consumer that reads on demand
gets old images. Here a grabber thread reads continuously and keeps the newest frame only;
``latest(after=t)`` waits (condition variable) for a frame captured after ``t``.

Every open and read runs in a worker thread. A supervisor thread watches it: a worker that ends
(open failed, read failed) or stalls (no frame for ``camera.read_timeout_ms``, open longer than
``camera.open_timeout_ms`` — e.g. ``read()`` blocked on an unplugged V4L2 device) is abandoned,
the state goes ``"lost"`` and a new worker reopens after ``camera.reconnect_backoff_ms``. An
abandoned worker that later returns from its call releases its capture and exits. So no call of
this class hangs on a dead camera.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.capture.base import CaptureError, Frame, FrameSource, frame_image, log
from edge.settings import CameraSettings

#: Opens the device/stream and returns an opened ``cv2.VideoCapture`` (or anything with ``read()``
#: -> ``(ok, ndarray BGR or gray)`` and ``release()``); raises on failure. Runs in a worker thread.
Opener = Callable[[], Any]


@dataclass
class _Attempt:
    """One open + read-loop worker; ``gen`` identifies it (abandoned when it no longer matches)."""

    gen: int
    done: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    opened: bool = False
    frames: int = 0
    reason: str = ""


class LiveSource(FrameSource):
    """A camera or stream read by a grabber thread (free-run and trigger modes).

    Args:
        name: shown in logs and used in ``source_id`` (``name#index``).
        opener: see :data:`Opener`.
        camera: ``camera`` settings (open/read timeouts in ms, reconnect backoff in ms).
        channel_order: ``"RGB"``/``"BGR"`` for ``Frame.image``.
        on_state: state-change callback (see :class:`FrameSource`).
        hint: what to check when the first open fails (appended to the :class:`CaptureError`).
    """

    is_replay = False

    def __init__(self, name: str, opener: Opener, camera: CameraSettings, channel_order: str = "RGB",
                 on_state: Callable[[str], object] | None = None, hint: str = "") -> None:
        super().__init__(name, camera, channel_order, on_state)
        self._opener = opener
        self._hint = hint
        self._cond = threading.Condition(self._lock)
        self._newest: Frame | None = None
        self._newest_taken = True
        self._last_given = float("-inf")
        self._attempt = _Attempt(gen=0)
        self._progress_t = time.monotonic()
        self._first = threading.Event()
        self._first_error = ""
        self._supervisor: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------
    def _start(self) -> None:
        self._supervisor = threading.Thread(target=self._supervise, name=f"capture-{self.name}", daemon=True)
        self._supervisor.start()
        # The supervisor gives up on the first open after open_timeout_ms, so this wait is bounded.
        self._first.wait(self.camera.open_timeout_ms / 1000.0 + 2.0)
        if not self._first.is_set() or self._first_error:
            err = self._first_error or f"no answer within {self.camera.open_timeout_ms} ms"
            self.close()
            raise CaptureError(f"cannot open camera source {self.name}: {err}. {self._hint}".strip())

    def _close(self) -> None:
        with self._cond:
            self._cond.notify_all()
            att = self._attempt
        att.done.set()  # wakes the supervisor
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=1.0)
        self._attempt.released.wait(0.5)  # a responsive worker releases the device now

    # -- supervisor ------------------------------------------------------------------------
    def _supervise(self) -> None:
        attempt_no = 0
        while not self._stop.is_set():
            with self._cond:
                att = self._attempt = _Attempt(gen=self._attempt.gen + 1)
                self._progress_t = time.monotonic()
            threading.Thread(target=self._work, args=(att,), name=f"grab-{self.name}", daemon=True).start()
            reason = self._watch(att)
            if self._stop.is_set():
                return
            with self._cond:  # abandon the worker (if still blocked) and forget the old frame
                self._attempt = _Attempt(gen=att.gen + 1)  # placeholder until the next worker
                self._attempt.released.set()
                if self._newest is not None and not self._newest_taken:
                    self._stats["dropped_stale"] += 1
                self._newest = None
            if not self._first.is_set():
                self._first_error = reason
                self._first.set()
                return
            if self.state == "lost":  # stays "lost" until a reopened source delivers again
                log.info("capture %s: reopen attempt %d failed (%s)", self.name, attempt_no, reason)
            self._set_state("lost", reason)
            if att.frames:
                attempt_no = 0
            if self._stop.wait(self._backoff_s(attempt_no)):
                return
            attempt_no += 1
            self._count("reconnects")
            log.debug("capture %s: reopening (attempt %d)", self.name, attempt_no)

    def _watch(self, att: _Attempt) -> str:
        """Wait until the worker ends or stalls; returns why."""
        while True:
            with self._cond:
                opening = not att.opened
                limit_ms = self.camera.open_timeout_ms if opening else self.camera.read_timeout_ms
                left = self._progress_t + limit_ms / 1000.0 - time.monotonic()
            if left <= 0:
                return f"open did not finish within {limit_ms} ms" if opening else f"no frame for {limit_ms} ms"
            if att.done.wait(left):
                return att.reason or "capture stopped"

    # -- worker ----------------------------------------------------------------------------
    def _work(self, att: _Attempt) -> None:
        cap = None
        try:
            cap = self._opener()
            with self._cond:
                if att.gen != self._attempt.gen or self._stop.is_set():
                    return  # abandoned while opening, or closed
                att.opened = True
                self._progress_t = time.monotonic()
            self._first.set()
            while not self._stop.is_set():
                ok, img = cap.read()
                t, wall = time.monotonic(), time.time()
                if not ok or img is None:
                    att.reason = "read failed (stream ended, device unplugged or read timeout)"
                    return
                image = frame_image(img, self.channel_order)
                if not self._publish(att, image, t, wall, *self._prepared(image)):
                    return
        except Exception as exc:  # noqa: BLE001 - CaptureError from the opener, cv2.error from read
            att.reason = str(exc) if isinstance(exc, CaptureError) else f"{type(exc).__name__}: {exc}"
        finally:
            if cap is not None:
                try:
                    cap.release()
                except Exception:  # noqa: BLE001 - best effort on a dying device
                    log.debug("capture %s: release failed", self.name, exc_info=True)
            att.released.set()
            att.done.set()

    def _publish(self, att: _Attempt, image: np.ndarray, t: float, wall: float,
                 prepared: np.ndarray | None = None, key: object = None) -> bool:
        with self._cond:
            if att.gen != self._attempt.gen:
                return False
            index = self._stats["frames"]
            self._stats["frames"] += 1
            if self._newest is not None and not self._newest_taken:
                self._stats["dropped_stale"] += 1
            self._newest = Frame(image, t, wall, index, f"{self.name}#{index}", None, prepared, key)
            self._newest_taken = False
            self._progress_t = t
            att.frames += 1
            self._cond.notify_all()
        if att.frames == 1:
            self._set_state("ok")
        return True

    # -- consumer --------------------------------------------------------------------------
    def latest(self, after: float | None = None, timeout: float = 1.0) -> Frame | None:
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while True:
                bound = self._last_given if after is None else after
                frame = self._newest
                if frame is not None and frame.t_capture > bound:
                    self._newest_taken = True
                    self._last_given = max(self._last_given, frame.t_capture)
                    return frame
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return None
                self._cond.wait(left)

    def next_frame(self, timeout: float = 1.0) -> Frame | None:
        return self.latest(None, timeout)
