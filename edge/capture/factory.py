"""``open_source``: pick the frame source for the ``camera.source`` string and its OpenCV opener.

| ``camera.source``                      | source                        | OpenCV backend       |
|----------------------------------------|-------------------------------|----------------------|
| ``0``, ``/dev/video0``                 | :class:`LiveSource` (V4L2)    | ``cv2.CAP_V4L2``     |
| contains ``!`` (``nvarguscamerasrc …``)| :class:`LiveSource`           | ``cv2.CAP_GSTREAMER``|
| ``rtsp://…``, ``http(s)://…``          | :class:`LiveSource`           | ``cv2.CAP_FFMPEG``   |
| an existing folder                     | :class:`FolderSource`         | ``cv2.imread``       |
| an existing file                       | :class:`VideoFileSource`      | any                  |
| ``demo``                               | :class:`FolderSource` over ``demo_folder`` |         |
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from edge.capture.base import CaptureError, FrameSource, log
from edge.capture.live import LiveSource
from edge.capture.replay import FolderSource, VideoFileSource
from edge.frames import list_images
from edge.settings import CameraSettings

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
_CABLE_HINT = "Check the cable/USB connection and `v4l2-ctl --list-devices`."
_GROUP_HINT = "Add the service user to the 'video' group (`sudo usermod -aG video <user>`, then log in again)."


def open_source(camera: CameraSettings, channel_order: str = "RGB", demo_folder: str | Path | None = None,
                on_state: Callable[[str], object] | None = None,
                lister: Callable[[Path], list[Path]] | None = None,
                prepare: Callable[[np.ndarray], np.ndarray] | None = None) -> FrameSource:
    """Create the frame source for ``camera.source`` (not started: call ``start()`` or use ``with``).

    ``prepare`` (e.g. ``edge.preprocess.Fitter(spec)``) runs on every frame in the capture thread
    (see :attr:`FrameSource.prepare`); the other arguments are described below.
    """
    src = _open_source(camera, channel_order, demo_folder, on_state, lister)
    src.prepare = prepare
    return src


def _open_source(camera: CameraSettings, channel_order: str = "RGB", demo_folder: str | Path | None = None,
                 on_state: Callable[[str], object] | None = None,
                 lister: Callable[[Path], list[Path]] | None = None) -> FrameSource:
    """Create the frame source for ``camera.source``.

    Args:
        camera: the ``camera`` settings section.
        channel_order: ``"RGB"`` or ``"BGR"``: order of ``Frame.image`` (the model's order).
        demo_folder: folder of rendered demo parts, required when ``camera.source == "demo"``.
        on_state: called with the new state (``opening/ok/lost/exhausted/closed``) on each change.
        lister: folder sources: ``folder -> list[Path]`` in play order (default: sorted relative
            path, :func:`edge.frames.list_images`; the demo may pass ``edge.demo.synth.replay_order``).

    Raises:
        CaptureError: the source does not exist or cannot work here (missing folder/file/device,
            no permission, OpenCV without GStreamer, 'demo' without ``demo_folder``).
        ValueError: ``channel_order`` is not RGB or BGR.
    """
    if channel_order not in ("RGB", "BGR"):
        raise ValueError(f"channel_order = {channel_order!r}: expected 'RGB' or 'BGR'")
    src = camera.source.strip()
    if src == "demo":
        if demo_folder is None:
            raise CaptureError("camera.source = 'demo' needs the folder of rendered demo parts (demo_folder); none given")
        return _folder(Path(demo_folder), camera, channel_order, on_state, lister)
    if src.isdigit() or src.startswith("/dev/video"):
        return _v4l2(src, camera, channel_order, on_state)
    if "!" in src:
        return _gstreamer(src, camera, channel_order, on_state)
    scheme = urlsplit(src).scheme.lower()
    if scheme in STREAM_SCHEMES:
        return _stream(src, camera, channel_order, on_state)
    path = Path(src).expanduser()
    if path.is_dir():
        return _folder(path, camera, channel_order, on_state, lister)
    if path.is_file():
        return VideoFileSource(path, camera, channel_order, on_state)
    raise CaptureError(
        f"camera.source = {src!r}: no such file or folder, and not a camera either. Expected a device index "
        f"('0') or /dev/videoN, a GStreamer pipeline (contains '!'), an {'/'.join(STREAM_SCHEMES)} URL, "
        f"a video file, an image folder, or 'demo'. Check the path (relative paths start at {os.getcwd()})."
    )


def _folder(path: Path, camera: CameraSettings, order: str, on_state: Callable[[str], object] | None,
            lister: Callable[[Path], list[Path]] | None) -> FrameSource:
    if not path.is_dir():
        raise CaptureError(f"camera.source: image folder {path} does not exist (check the path)")
    return FolderSource(path, camera, order, on_state, lister or list_images)


def _v4l2(src: str, camera: CameraSettings, order: str, on_state: Callable[[str], object] | None) -> FrameSource:
    node = f"/dev/video{src}" if src.isdigit() else src
    device: int | str = int(src) if src.isdigit() else src
    linux = sys.platform.startswith("linux")
    if linux and not os.path.exists(node):
        raise CaptureError(f"camera.source = {src!r}: {node} does not exist (camera not detected). {_CABLE_HINT}")
    if linux and not os.access(node, os.R_OK | os.W_OK):
        raise CaptureError(f"camera.source = {src!r}: no permission to open {node}. {_GROUP_HINT}")
    api = cv2.CAP_V4L2 if linux else cv2.CAP_ANY

    def opener() -> cv2.VideoCapture:
        if linux and not os.path.exists(node):
            raise CaptureError(f"{node} is gone (unplugged?)")
        cap = cv2.VideoCapture(device, api)
        if not cap.isOpened():
            cap.release()
            raise CaptureError(f"OpenCV (V4L2) could not open {node} (in use by another program?)")
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        wanted = {cv2.CAP_PROP_FRAME_WIDTH: camera.width, cv2.CAP_PROP_FRAME_HEIGHT: camera.height,
                  cv2.CAP_PROP_FPS: camera.fps}
        for prop, value in wanted.items():
            if value is not None:
                cap.set(prop, float(value))
        got = [cap.get(p) for p in wanted]
        if any(v is not None and abs(g - v) > 0.5 for g, v in zip(got, wanted.values())):
            log.warning("capture %s: asked for %sx%s @ %s fps, camera gives %gx%g @ %g fps", node,
                        camera.width, camera.height, camera.fps, *got)
        return cap

    return LiveSource(node, opener, camera, order, on_state,
                      hint=f"Check that {node} is the camera (`v4l2-ctl --list-devices`), that no other program "
                           f"uses it, the cable, and the 'video' group membership.")


def gstreamer_available() -> bool:
    """True if this OpenCV build has the GStreamer video backend (``cv2.getBuildInformation()``)."""
    return re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()) is not None


def _gstreamer(src: str, camera: CameraSettings, order: str, on_state: Callable[[str], object] | None) -> FrameSource:
    if not gstreamer_available():
        raise CaptureError(
            "camera.source is a GStreamer pipeline, but this OpenCV has no GStreamer support "
            "(cv2.getBuildInformation() says 'GStreamer: NO'; the opencv-python wheels from PyPI never have it). "
            "On a Jetson use JetPack's OpenCV: create the venv with --system-site-packages and "
            "`pip uninstall opencv-python-headless` in it, so that /usr/lib/python3/dist-packages/cv2 is used."
        )
    if not re.search(r"\bappsink\b", src):
        raise CaptureError(
            "camera.source: a GStreamer pipeline for OpenCV must end in appsink, e.g. '… ! videoconvert ! "
            "video/x-raw,format=BGR ! appsink drop=true max-buffers=1'"
        )

    def opener() -> cv2.VideoCapture:
        cap = cv2.VideoCapture(src, cv2.CAP_GSTREAMER)
        if not cap.isOpened():
            cap.release()
            raise CaptureError("OpenCV (GStreamer) could not start the pipeline")
        return cap

    return LiveSource("gstreamer", opener, camera, order, on_state,
                      hint="Test the pipeline with `gst-launch-1.0` (appsink -> fakesink); for CSI cameras check "
                           "the ribbon cable and `sudo systemctl restart nvargus-daemon`.")


def redact(url: str) -> str:
    """``url`` without the password (for logs and ``source_id``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _stream(src: str, camera: CameraSettings, order: str, on_state: Callable[[str], object] | None) -> FrameSource:
    name = redact(src)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, camera.open_timeout_ms,
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, camera.read_timeout_ms]

    def opener() -> cv2.VideoCapture:
        t0 = time.monotonic()
        cap = cv2.VideoCapture(src, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            ms = round((time.monotonic() - t0) * 1000)
            raise CaptureError(f"OpenCV (FFmpeg) could not open {name}: OpenCV gave up after {ms} ms (connection "
                               f"refused, no stream, or no answer; open timeout {camera.open_timeout_ms} ms)")
        return cap

    return LiveSource(name, opener, camera, order, on_state,
                      hint="Check the URL, user/password, that the camera answers (`ffprobe <url>`) and the network.")
