"""edge.priority: background threads get a higher nice value, the calling process keeps its own."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from edge.priority import BACKGROUND_NICE, background_thread

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux")


def test_only_the_calling_thread_is_lowered() -> None:
    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: dict[str, int | bool] = {}

    def work() -> None:
        tid = threading.get_native_id()
        seen["before"] = os.getpriority(os.PRIO_PROCESS, tid)
        seen["ok"] = background_thread()
        seen["after"] = os.getpriority(os.PRIO_PROCESS, tid)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen["ok"] is True
    assert seen["after"] == min(19, int(seen["before"]) + BACKGROUND_NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before


def test_the_replay_reader_runs_lowered(tmp_path) -> None:
    """The folder replay's decode-ahead thread is a background thread."""
    import cv2
    import numpy as np

    from edge.capture.replay import FolderSource
    from edge.settings import CameraSettings

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((8, 8), i * 40, np.uint8))
    main_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    src = FolderSource(tmp_path, CameraSettings(source=str(tmp_path), loop=True))
    try:
        src.start()
        assert src.next_frame(timeout=5) is not None
        reader = src._reader
        assert reader.native_id is not None
        assert os.getpriority(os.PRIO_PROCESS, reader.native_id) == min(19, main_nice + BACKGROUND_NICE)
    finally:
        src.close()
