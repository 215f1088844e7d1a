"""What every frame source shares: :class:`Frame`, :class:`CaptureError` and the life cycle.

Life cycle: ``open_source(...)`` checks the source exists -> :meth:`FrameSource.start` opens it
(raises :class:`CaptureError`) -> ``latest()`` / ``next_frame()`` / ``frames()`` -> :meth:`close`.
Also a context manager (``with open_source(cam) as src:`` starts and closes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge.frames import to_channel_order
from edge.settings import CameraSettings

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger("edgeqc.capture")

#: Values of :attr:`FrameSource.state`.
STATES = ("opening", "ok", "lost", "exhausted", "closed")


class CaptureError(RuntimeError):
    """A frame source cannot be opened; the message says what was tried and what to check."""


def frame_image(img: np.ndarray, order: str) -> np.ndarray:
    """OpenCV image (gray/BGR/BGRA) -> ``Frame.image``: :func:`edge.frames.to_channel_order`, alpha dropped."""
    out = to_channel_order(img, order)
    return np.ascontiguousarray(out[:, :, :3]) if out.ndim == 3 and out.shape[2] == 4 else out


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured image.

    Attributes:
        image: ``[H,W]`` (gray) or ``[H,W,3]`` uint8 (or uint16) in the channel order given to
            :func:`~edge.capture.open_source` (converted once, in the source; alpha dropped).
        t_capture: ``time.monotonic()`` in s when the camera read returned; for replay sources the
            moment the frame was handed out (a file has no capture time).
        wall_time: UNIX time in s taken together with ``t_capture``.
        index: frame counter of the source (0, 1, 2, ... in the order frames were produced).
        source_id: where the frame came from: file path relative to the replayed folder
            (``crack/exp1_num_1.jpg``), ``video.mp4#frame12``, or ``<source>#<index>`` for cameras.
        label: folder sources: name of the first-level subfolder (ground truth); else None.
        prepared: the frame already fitted to the model input, or already the model tensor
            ``[3,H,W] float32``, by the source's :attr:`FrameSource.prepare` in the capture thread
            (off the trigger path); or None.
        prepared_key: ``prepare.key`` it was made with (the loop uses ``prepared`` only when it
            matches the running model's :func:`edge.preprocess.tensor_key` or ``fit_key``).
    """

    image: np.ndarray
    t_capture: float
    wall_time: float
    index: int
    source_id: str
    label: str | None = None
    prepared: np.ndarray | None = None
    prepared_key: object = None


class FrameSource:
    """Base of all sources. Thread-safe; one consumer thread is the intended use.

    Args:
        name: what was opened, for logs and ``source_id`` (credentials already removed).
        camera: the ``camera`` settings section (timeouts, backoff, fps, loop).
        channel_order: ``"RGB"`` or ``"BGR"``, the order of ``Frame.image``.
        on_state: called with the new :attr:`state` on every change, from a capture thread;
            exceptions are logged and ignored.
    """

    #: True for folder and video-file sources (deterministic, one frame per request).
    is_replay: bool = False

    def __init__(self, name: str, camera: CameraSettings, channel_order: str = "RGB",
                 on_state: Callable[[str], object] | None = None) -> None:
        self.name = name
        self.camera = camera
        self.channel_order = channel_order
        self.on_state = on_state
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._state = "opening"
        self._exhausted = False
        self._started = False
        self._stats = {"frames": 0, "corrupt": 0, "reconnects": 0, "dropped_stale": 0}
        self.prepare: Callable[[np.ndarray], np.ndarray] | None = None
        """Optional per-frame work done in the capture thread, e.g. :class:`edge.preprocess.Fitter`
        (its ``key`` attribute is stored as ``Frame.prepared_key``). Set before :meth:`start`."""

    def _prepared(self, image: np.ndarray) -> tuple[np.ndarray | None, object]:
        """``(prepare(image), prepare.key)``; ``(None, None)`` without ``prepare`` or when it fails
        (logged once per source; the loop then preprocesses the frame itself)."""
        fn = self.prepare
        if fn is None:
            return None, None
        try:
            return fn(image), getattr(fn, "key", None)
        except Exception as exc:  # noqa: BLE001 - a bad frame must not stop the capture; preprocess reports it
            if not getattr(self, "_prepare_failed", False):
                self._prepare_failed = True
                log.warning("capture %s: prepare failed (%s); frames go unprepared", self.name, exc)
            return None, None

    # -- status ----------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """``"opening"``, ``"ok"``, ``"lost"`` (reopening with backoff), ``"exhausted"`` or ``"closed"``."""
        return self._state

    @property
    def exhausted(self) -> bool:
        """True once a replay source delivered its last frame (never for cameras, or with ``loop``)."""
        return self._exhausted

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``frames`` produced, ``corrupt`` files skipped, ``reconnects`` (reopen attempts
        after a loss), ``dropped_stale`` (frames replaced by a newer one before anyone took them)."""
        with self._lock:
            return dict(self._stats)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def _set_state(self, state: str, reason: str = "") -> None:
        with self._lock:
            if state == self._state or self._state == "closed":
                return
            self._state = state
        if state == "lost":
            log.warning("capture %s: source lost (%s)", self.name, reason or "no reason given")
        else:
            log.info("capture %s: %s%s", self.name, state, f" ({reason})" if reason else "")
        if self.on_state is not None:
            try:
                self.on_state(state)
            except Exception:
                log.exception("capture %s: on_state callback failed", self.name)

    def _backoff_s(self, attempt: int) -> float:
        steps = self.camera.reconnect_backoff_ms or [1000]
        return max(0, steps[min(attempt, len(steps) - 1)]) / 1000.0

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> Self:
        """Open the source and start its thread; returns ``self``. Idempotent.

        Raises:
            CaptureError: the source cannot be opened (message: what was tried, what to check).
        """
        if not self._started:
            self._started = True
            self._start()
        return self

    def close(self) -> None:
        """Stop the capture threads and release the device; returns within ~2 s even if a driver call hangs."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._close()
        self._set_state("closed")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    # -- frames ----------------------------------------------------------------------------
    def latest(self, after: float | None = None, timeout: float = 1.0) -> Frame | None:
        """The newest frame captured strictly after ``after`` (``time.monotonic()`` s).

        Waits up to ``timeout`` s. ``after=None``: the newest frame not handed out before. Replay
        sources hand out their next frame (waiting until ``after`` if it lies in the future).

        Returns:
            The frame, or None on timeout, lost source, exhausted replay or closed source.
        """
        raise NotImplementedError

    def next_frame(self, timeout: float = 1.0) -> Frame | None:
        """Replay: the next image/video frame in order (deterministic). Cameras: ``latest(None)``.

        Returns:
            The frame, or None on timeout or at the end (then :attr:`exhausted` is True).
        """
        raise NotImplementedError

    def frames(self, timeout: float = 0.5) -> Iterator[Frame]:
        """Free-run iteration: every frame of a replay source (paced at ``camera.fps`` if set) or
        each new camera frame. Ends when a replay source is exhausted or the source is closed
        (call :meth:`close` from another thread to end it); ``timeout`` is the polling bound in s."""
        fps = self.camera.fps if self.is_replay else None
        t0 = time.monotonic()
        n = 0
        while not self._stop.is_set() and not self._exhausted:
            if fps:
                wait = t0 + n / fps - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return
            frame = self.next_frame(timeout)
            if frame is not None:
                n += 1
                yield frame
