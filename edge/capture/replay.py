"""Replay sources: a folder of images (sorted relative-path order) or a video file.

Deterministic: each ``next_frame()`` hands out the next image, traceable by ``Frame.source_id``.
A reader thread decodes up to ``PREFETCH`` frames ahead (decoding stays off the trigger path and a
slow disk cannot hang the caller: ``next_frame`` waits at most its timeout). Unreadable files are
skipped, counted in ``stats["corrupt"]`` and logged by name. A folder or video that disappears
mid-run sets the state ``"lost"`` until it is back (checked with ``camera.reconnect_backoff_ms``),
then the replay continues where it was.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import cv2
import numpy as np

from edge.capture.base import CaptureError, Frame, FrameSource, frame_image, log
from edge.frames import IMAGE_EXTENSIONS, ImageError, decode_image, list_images
from edge.priority import background_thread
from edge.settings import CameraSettings

PREFETCH = 2
_END = object()
_Item = tuple[np.ndarray, str, "str | None"]
_Queued = tuple[np.ndarray, str, "str | None", "np.ndarray | None", object]


class _ReplaySource(FrameSource):
    is_replay = True

    def __init__(self, path: Path, camera: CameraSettings, channel_order: str = "RGB",
                 on_state: Callable[[str], object] | None = None) -> None:
        super().__init__(str(path), camera, channel_order, on_state)
        self.path = path
        self._queue: queue.Queue[object] = queue.Queue(maxsize=PREFETCH)
        self._reader: threading.Thread | None = None

    def _check(self) -> None:
        raise NotImplementedError

    def _one_pass(self) -> Iterator[_Item]:
        raise NotImplementedError

    def _start(self) -> None:
        self._check()
        self._reader = threading.Thread(target=self._read_loop, name=f"replay-{self.path.name}", daemon=True)
        self._set_state("ok")
        self._reader.start()

    def _close(self) -> None:
        while True:  # unblock a reader waiting on a full queue; it sees the stop flag next
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._reader is not None:
            self._reader.join(timeout=1.0)

    def _read_loop(self) -> None:
        background_thread()  # decoding ahead: never before the trigger -> RES path (edge.priority)
        try:
            while not self._stop.is_set():
                produced = 0
                for image, source_id, label in self._one_pass():
                    prepared, key = self._prepared(image)  # e.g. the resize, ahead of the trigger
                    self._queue.put((image, source_id, label, prepared, key))
                    if self._stop.is_set():
                        return
                    produced += 1
                if not self.camera.loop or produced == 0:
                    break
                log.info("replay %s: end reached, looping", self.name)
        except Exception:  # noqa: BLE001 - a replay ends, it never kills the station
            log.exception("replay %s: reader failed; ending the replay", self.name)
        if not self._stop.is_set():
            self._queue.put(_END)

    def _wait_until_back(self, what: str) -> bool:
        """State "lost" until ``self.path`` exists again; False if closed meanwhile."""
        self._set_state("lost", f"{what} disappeared")
        attempt = 0
        while not self.path.exists():
            if self._stop.wait(self._backoff_s(attempt)):
                return False
            attempt += 1
            self._count("reconnects")
        self._set_state("ok", f"{what} is back")
        return True

    def next_frame(self, timeout: float = 1.0) -> Frame | None:
        if self._exhausted or self._stop.is_set():
            return None
        try:
            item = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        if item is _END:
            self._queue.put_nowait(_END)  # for any other consumer
            self._exhausted = True
            self._set_state("exhausted")
            return None
        image, source_id, label, prepared, key = cast(_Queued, item)
        with self._lock:
            index = self._stats["frames"]
            self._stats["frames"] += 1
        return Frame(image, time.monotonic(), time.time(), index, source_id, label, prepared, key)

    def latest(self, after: float | None = None, timeout: float = 1.0) -> Frame | None:
        deadline = time.monotonic() + max(0.0, timeout)
        if after is not None and after > time.monotonic():  # emulate the trigger delay
            closed = self._stop.wait(min(after, deadline) - time.monotonic())
            if closed or after > deadline:
                return None
        return self.next_frame(deadline - time.monotonic())


class FolderSource(_ReplaySource):
    """Images under ``path`` (recursive) in sorted relative-path order (:func:`edge.frames.list_images`).

    ``source_id`` is the POSIX path relative to ``path``; ``label`` the first-level subfolder name
    (None for images directly in ``path``). The folder is listed again on each ``loop`` pass.

    Args:
        lister: ``folder -> list[Path]`` of the files under it in play order; default
            :func:`edge.frames.list_images` (e.g. :func:`edge.demo.synth.replay_order` for the demo).
    """

    def __init__(self, path: Path, camera: CameraSettings, channel_order: str = "RGB",
                 on_state: Callable[[str], object] | None = None,
                 lister: Callable[[Path], list[Path]] = list_images) -> None:
        super().__init__(path, camera, channel_order, on_state)
        self._lister = lister

    def planned_frames(self) -> int:
        """Number of image files one pass will try (corrupt ones included)."""
        return len(self._lister(self.path))

    def _check(self) -> None:
        if not self.path.is_dir():
            raise CaptureError(f"camera.source: image folder {self.path} does not exist (check the path)")
        if not self._lister(self.path):
            raise CaptureError(
                f"camera.source: folder {self.path} contains no images "
                f"(searched recursively for {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )

    def _one_pass(self) -> Iterator[_Item]:
        while True:
            try:
                files = self._lister(self.path)
                break
            except NotADirectoryError:
                if not self._wait_until_back("image folder"):
                    return
        for file in files:
            image: np.ndarray | None = None
            while True:
                try:
                    image = decode_image(file, "BGR")
                except ImageError as exc:
                    image, error = None, str(exc)
                if image is not None or self.path.is_dir():
                    break
                if not self._wait_until_back("image folder"):
                    return
            if image is None:
                self._count("corrupt")
                log.warning("replay: %s; skipped, counted in stats['corrupt']", error)
                continue
            rel = file.relative_to(self.path)
            label = rel.parts[0] if len(rel.parts) > 1 else None
            yield frame_image(image, self.channel_order), rel.as_posix(), label


class VideoFileSource(_ReplaySource):
    """Frames of a video file in order; ``source_id`` is ``<file name>#frame<n>`` (n from 0)."""

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise CaptureError(
                f"camera.source: OpenCV cannot decode video file {self.path} (check that the file is "
                f"complete and its codec is supported: cv2.getBuildInformation() lists the video backends)"
            )
        return cap

    def planned_frames(self) -> int:
        """Frame count from the container (may be approximate for some codecs)."""
        cap = self._open()
        try:
            return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            cap.release()

    def _check(self) -> None:
        if not self.path.is_file():
            raise CaptureError(f"camera.source: video file {self.path} does not exist (check the path)")
        self._open().release()

    def _one_pass(self) -> Iterator[_Item]:
        if not self.path.exists() and not self._wait_until_back("video file"):
            return
        cap = self._open()
        n = 0
        try:
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            while not self._stop.is_set():
                ok, img = cap.read()
                if not ok or img is None:
                    break
                yield frame_image(img, self.channel_order), f"{self.path.name}#frame{n}", None
                n += 1
        finally:
            cap.release()
        if 0 < n < total and not self._stop.is_set():
            log.warning("replay %s: video ended at frame %d of %d (truncated or corrupt file?)",
                        self.name, n, total)
