"""Frames fitted in the capture thread (``FrameSource.prepare``) give the very same results."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from tiny_models import make_classifier

from edge.backends import open_backend
from edge.capture import open_source
from edge.capture.memory import MemorySource, decode_folder
from edge.inspection import Inspector
from edge.preprocess import Fitter, fit_key
from edge.settings import CameraSettings, ModelSettings, load_settings

LABELS = ["a", "b", "c", "d", "e"]


def _folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    for i in range(6):
        d = tmp_path / "imgs" / LABELS[i % 2]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{i}.png"), rng.integers(0, 256, (30 + i, 41, 3), dtype=np.uint8))
    return tmp_path / "imgs"


def test_folder_source_prepares_in_its_reader_thread(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    model = ModelSettings(path=str(make_classifier(tmp_path / "m.onnx")), labels=LABELS, input_size=(8, 8))
    spec = open_backend(model).spec
    fitter = Fitter(spec)
    with open_source(CameraSettings(source=str(folder)), prepare=fitter) as src:
        frames = [src.next_frame(5) for _ in range(6)]
    for f in frames:
        assert f is not None and f.prepared is not None and f.prepared_key == fit_key(spec)
        np.testing.assert_array_equal(f.prepared, fitter(f.image))
    with open_source(CameraSettings(source=str(folder))) as src:  # default: nothing prepared
        f = src.next_frame(5)
        assert f is not None and f.prepared is None and f.prepared_key is None


def _run(settings, backend, items, prepare) -> list[np.ndarray]:
    results = []

    class Sink:
        def handle(self, r) -> None:
            results.append(r)

    src = MemorySource(items)
    src.prepare = prepare
    src.start()
    insp = Inspector(settings, backend, src, sinks=[Sink()]).start()
    assert insp.finished.wait(10)
    insp.stop()
    assert len(results) == len(items)
    return [r.probabilities for r in sorted(results, key=lambda r: r.seq)]


def test_prepared_frames_give_identical_probabilities(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    settings = load_settings(model={"path": str(make_classifier(tmp_path / "m.onnx")), "labels": LABELS,
                                    "input_size": (8, 8)},
                             decision={"pass_classes": ["a"]}, plc={"enabled": False, "mode": "free_run"},
                             zmq={"enabled": False}, archive={"enabled": False}, metrics={"enabled": False})
    items, _ = decode_folder(folder)
    with open_backend(settings.model) as backend:
        plain = _run(settings, backend, items, None)
        prepared = _run(settings, backend, items, Fitter(backend.spec))
        other = _run(settings, backend, items, Fitter(replace(backend.spec, input_size=(6, 6))))  # wrong key
        tensors = _run(settings, backend, items, Fitter(backend.spec, tensor=True))  # what Station uses
        # a tensor made for another normalization must not be used (its key differs)
        other_norm = _run(settings, backend, items, Fitter(replace(backend.spec, mean=(0.5, 0.5, 0.5)), tensor=True))
    for a, b, c, d, e in zip(plain, prepared, other, tensors, other_norm):
        assert a.tobytes() == b.tobytes() == c.tobytes() == d.tobytes() == e.tobytes()
    assert len({p.tobytes() for p in plain}) == len(plain)  # every frame its own answer: a mix-up would show
