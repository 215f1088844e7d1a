"""Frame capture: cameras (V4L2, GStreamer, RTSP/HTTP) and replay sources (image folder, video file).

``open_source(settings.camera, channel_order=spec.channel_order)`` returns a :class:`FrameSource`;
see :mod:`edge.capture.factory` for how ``camera.source`` is interpreted, :mod:`edge.capture.live`
for the newest-frame grabber and reconnect, :mod:`edge.capture.replay` for folder/video replay.
"""

from __future__ import annotations

from edge.capture.base import STATES, CaptureError, Frame, FrameSource
from edge.capture.factory import gstreamer_available, open_source
from edge.capture.live import LiveSource
from edge.capture.replay import FolderSource, VideoFileSource

__all__ = [
    "STATES",
    "CaptureError",
    "FolderSource",
    "Frame",
    "FrameSource",
    "LiveSource",
    "VideoFileSource",
    "gstreamer_available",
    "open_source",
]
