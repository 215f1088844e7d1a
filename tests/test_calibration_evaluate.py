"""``edgeqc evaluate`` on labelled folders (another tool's layout; unknown class folders are an
error), with real ONNX Runtime on a tiny conv net: predictions, metrics and JSON agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from qdq_models import LABELS, corrupt_images, make_convnet, make_images

from calibration.dataset import DatasetError, scan_labelled
from calibration.evaluate import evaluate_folder
from edge.frames import read_image
from edge.model_spec import resolve_spec
from edge.preprocess import preprocess


@pytest.fixture()
def convnet(tmp_path: Path) -> Path:
    return make_convnet(tmp_path / "model" / "net.onnx")


def _reference_pred(model: Path, files: list[Path]) -> np.ndarray:
    spec = resolve_spec(model)
    x = np.stack([preprocess(read_image(p, spec.channel_order), spec) for p in files])
    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})[0].argmax(axis=1)


def test_folder_written_by_another_tool(tmp_path: Path, convnet: Path) -> None:
    """ImageFolder / Ultralytics layout: <root>/<class>/<image>, nested subfolders allowed, extra
    non-image files ignored, a class without images is fine."""
    root = tmp_path / "val"
    make_images(root, 9, classes=("good", "scratch"))
    (root / "scratch" / "batch2").mkdir()
    make_images(root / "scratch" / "batch2", 2, seed=5)
    (root / "README.txt").write_text("exported by another tool")
    corrupt_images(root / "good")
    lf = scan_labelled(root, LABELS)
    assert lf.counts() == {"good": 7, "scratch": 6, "dent": 0}
    ev = evaluate_folder([("FP32", convnet), ("copy", convnet)], root, resolve_spec(convnet), ["good"])
    assert len(ev.files) == 11 and [p.name for p in ev.skipped] == ["zz_garbage.png", "zz_truncated.jpg"]
    want = _reference_pred(convnet, ev.files)
    assert ev.models[0].pred.tolist() == want.tolist()
    assert ev.agreement(1, 0) == 100.0
    m = ev.models[0].metrics
    assert m.images == 11 and m.good == 5 and m.defective == 6
    assert m.escapes == int(((ev.y == 1) & (want == 0)).sum())
    d = ev.to_dict()
    assert d["images"] == 11 and d["skipped"] == 2 and d["agreement"] == {"copy vs FP32": 100.0}
    table = ev.format_table()
    assert "defect escape rate" in table and "confusion matrix copy" in table


def test_unknown_class_folder_is_an_error(tmp_path: Path, convnet: Path) -> None:
    make_images(tmp_path / "val", 4, classes=("good", "Scratch", "bent"))
    with pytest.raises(DatasetError, match=r"class folder\(s\) 'Scratch' \(1 images\), 'bent' \(1 images\) are "
                                           r"not model labels \['good', 'scratch', 'dent'\]"):
        scan_labelled(tmp_path / "val", LABELS)


def test_images_outside_class_folders_are_an_error(tmp_path: Path) -> None:
    make_images(tmp_path / "val", 2)
    with pytest.raises(DatasetError, match=r"2 image\(s\) outside a class folder"):
        scan_labelled(tmp_path / "val", LABELS)


def test_evaluate_cli_json_and_table(tmp_path: Path, convnet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge.cli import main

    make_images(tmp_path / "calib", 10)
    make_images(tmp_path / "val", 9, classes=LABELS)
    q = tmp_path / "net.int8.onnx"
    assert main(["calibrate", str(convnet), "--calib", str(tmp_path / "calib"), "--out", str(q), "--min-images", "10",
                 "--no-cache", "--no-progress"]) == 0
    capsys.readouterr()
    out_json = tmp_path / "ev.json"
    assert main(["evaluate", "--val", str(tmp_path / "val"), "--fp32", str(convnet), "--int8", str(q),
                 "--pass-class", "good", "--json", str(out_json), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "top-1 accuracy" in printed and "agreement vs FP32" in printed
    d = json.loads(out_json.read_text())
    assert set(d["models"]) == {"FP32", "INT8"} and d["images"] == 9 and d["pass_classes"] == ["good"]
    assert d["models"]["FP32"]["confusion"] and "INT8 vs FP32" in d["agreement"]
    assert main(["evaluate", "--val", str(tmp_path / "val"), "--fp32", str(convnet), "--json", "-",
                 "--pass-class", "good", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["models"]["FP32"]["images"] == 9
    assert main(["evaluate", "--val", str(tmp_path / "val"), "--fp32", str(convnet)]) == 1
    assert "pass class(es) ['free'] are not model labels" in capsys.readouterr().err  # default decision.pass_classes
    assert main(["evaluate", "--val", str(tmp_path / "val")]) == 2
