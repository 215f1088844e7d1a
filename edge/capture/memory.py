"""An in-memory replay source: frames already decoded, handed out in order (benchmarks, tests).

A camera delivers decoded pixels; a folder replay decodes JPEG/PNG files first. To measure what
the runtime itself costs per frame without the file decode, :class:`MemorySource` hands out
frames that were decoded beforehand (:func:`decode_folder`), cycling through them until
``count`` frames were given. It behaves like the folder replay (``is_replay``: ``next_frame``
gives the next frame, ``exhausted`` at the end), without a reader thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from edge.capture.base import Frame, FrameSource
from edge.frames import list_images, read_image
from edge.settings import CameraSettings

PREFETCH = 2
"""Frames a ``prepare`` capture thread works ahead of the consumer (as the folder replay)."""

MemoryItem = tuple[np.ndarray, str, "str | None"]
"""``(image, source_id, label)``: ``image`` ``[H,W]``/``[H,W,3]`` uint8 in the model's channel order."""


def decode_folder(folder: str | Path, channel_order: str = "RGB", limit: int | None = None,
                  lister: Callable[[Path], list[Path]] = list_images) -> tuple[list[MemoryItem], int]:
    """Decode the images under ``folder`` (sorted relative path) into memory.

    Returns:
        ``(items, corrupt)``: the decoded frames (at most ``limit``) and the number of unreadable
        files skipped. ``source_id`` is the relative path, ``label`` the first subfolder (or None).
    """
    root = Path(folder)
    items: list[MemoryItem] = []
    corrupt = 0
    for p in lister(root):
        if limit is not None and len(items) >= limit:
            break
        img = read_image(p, channel_order)
        if img is None:
            corrupt += 1
            continue
        rel = p.relative_to(root)
        items.append((img, rel.as_posix(), rel.parts[0] if len(rel.parts) > 1 else None))
    return items, corrupt


class MemorySource(FrameSource):
    """Replays ``items`` (decoded frames) in order, cycling, until ``count`` frames were handed out.

    Args:
        items: ``(image, source_id, label)`` tuples, e.g. from :func:`decode_folder`; the images are
            handed out as they are (not copied: do not modify them).
        count: frames to hand out in total (default ``len(items)``; more = cycle through again).
        gated: hand out frames only as :meth:`release` allows (a benchmark feeds a running
            station block by block); the replay ends after :meth:`finish`. ``count`` is ignored.

    With :attr:`~edge.capture.base.FrameSource.prepare` set before :meth:`start`, a capture
    thread runs it on each released frame, up to :data:`PREFETCH` frames ahead (like a camera
    grabber or the folder replay's reader), and ``Frame.prepared`` carries the result.
        camera: settings (only ``fps`` is used, by :meth:`FrameSource.frames`).

    Raises:
        ValueError: no items, or ``count`` < 0.
    """

    is_replay = True

    def __init__(self, items: Sequence[MemoryItem], count: int | None = None, *, gated: bool = False,
                 camera: CameraSettings | None = None, name: str = "memory") -> None:
        if not items:
            raise ValueError("MemorySource needs at least one frame (items is empty)")
        if count is not None and count < 0:
            raise ValueError(f"count = {count}, expected >= 0")
        super().__init__(name, camera or CameraSettings(source=name), "RGB")
        self._items = list(items)
        self.gated = gated
        self._allowed = 0 if gated else (len(self._items) if count is None else int(count))
        self._ended = not gated
        self._given = 0
        self._produced = 0  # frames prepared by the capture thread (only with ``prepare``)
        self._ready: dict[int, tuple[np.ndarray | None, object]] = {}
        self._thread: threading.Thread | None = None
        self._cv = threading.Condition(self._lock)

    @property
    def given(self) -> int:
        """Frames handed out so far."""
        with self._lock:
            return self._given

    def planned_frames(self) -> int:
        return self._allowed

    def release(self, n: int) -> None:
        """Gated: allow ``n`` more frames."""
        with self._cv:
            self._allowed += int(n)
            self._cv.notify_all()

    def finish(self) -> None:
        """Gated: no more frames after those released; the replay is then exhausted."""
        with self._cv:
            self._ended = True
            self._cv.notify_all()

    def _start(self) -> None:
        if self.prepare is not None:  # a capture thread prepares each frame, as a camera grabber would
            self._thread = threading.Thread(target=self._produce, name=f"capture-{self.name}", daemon=True)
            self._thread.start()
        self._set_state("ok")

    def _close(self) -> None:
        with self._cv:
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def _produce(self) -> None:
        """Prepare released frames up to ``PREFETCH`` ahead of the consumer."""
        while True:
            with self._cv:
                while not self._stop.is_set() and not (
                        self._produced < self._allowed and self._produced - self._given < PREFETCH):
                    self._cv.wait()
                if self._stop.is_set():
                    return
                i = self._produced
            ready = self._prepared(self._items[i % len(self._items)][0])
            with self._cv:
                self._ready[i] = ready
                self._produced += 1
                self._cv.notify_all()

    def next_frame(self, timeout: float = 1.0) -> Frame | None:
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cv:
            while True:
                if self._stop.is_set():
                    return None
                waiting = self._given < self._allowed
                if waiting and (self._thread is None or self._given in self._ready):
                    i = self._given
                    self._given += 1
                    self._stats["frames"] += 1
                    image, source_id, label = self._items[i % len(self._items)]
                    prepared, key = self._ready.pop(i) if self._thread is not None else (None, None)
                    self._cv.notify_all()  # room for the capture thread
                    return Frame(image, time.monotonic(), time.time(), i, source_id, label, prepared, key)
                if self._ended and not waiting:
                    newly = not self._exhausted
                    self._exhausted = True
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cv.wait(left)
        if newly:
            self._set_state("exhausted")
        return None

    def latest(self, after: float | None = None, timeout: float = 1.0) -> Frame | None:
        wait = 0.0 if after is None else min(after - time.monotonic(), max(0.0, timeout))
        if wait > 0 and self._stop.wait(wait):  # emulate the trigger delay
            return None
        return self.next_frame(timeout)
