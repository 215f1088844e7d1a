"""End to end on the shared models and the shared calib/val folders (``@pytest.mark.slow``).

mt-effnet-lite0 (issue 3/8 "done when"): plain ONNX Runtime INT8 misses the gate (exit 3, numbers
printed); ``--accuracy-aware`` reuses the cached ranges, keeps the stem convolution in float and
passes on the confirm half and the whole val folder, then stops at the engine step (exit 4)
because there is no TensorRT here. mt-yolo-cls: its Q/DQ graph (attention MatMuls, softmax
output, Ultralytics preprocessing in the metadata) passes the checks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import onnx
import pytest

from calibration.qdq_check import require_valid_qdq
from edge.cli import main
from edge.model_spec import resolve_spec

pytestmark = pytest.mark.slow
IMAGENET = ["--mean", "0.485", "0.456", "0.406", "--std", "0.229", "0.224", "0.225"]


def test_effnet_gate_refuses_plain_int8_and_accuracy_aware_passes(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, effnet_path: Path, calib_dir: Path, val_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on CI: no TensorRT
    args = ["build", str(effnet_path), "--calib", str(calib_dir), "--val", str(val_dir), "--out", str(tmp_path / "out"),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", *IMAGENET]
    assert main(args) == 3
    out = capsys.readouterr().out
    assert "top-1 FP32 94.78 % -> INT8" in out and "REFUSED" in out and "Try --accuracy-aware" in out
    rep = json.loads((tmp_path / "out" / "model.int8.report.json").read_text())
    gate = rep["gate"]["gate_after"]["val"]
    assert gate["top1_fp32"] == pytest.approx(94.7761, abs=1e-3) and gate["top1_drop_pp"] > 3.0
    assert rep["calibration_set"]["used"] == 500 and rep["cache"]["hit"] is False

    assert main([*args, "--accuracy-aware"]) == 4
    out = capsys.readouterr().out
    assert "ranges from cache" in out
    assert "layers kept in float: ['/conv_stem/Conv']" in out
    assert "edgeqc build --from-int8" in out
    rep = json.loads((tmp_path / "out" / "model.int8.report.json").read_text())
    assert rep["cache"]["hit"] is True and rep["excluded_nodes"] == ["/conv_stem/Conv"]
    g = rep["gate"]
    assert g["passed"] is True and g["search"]["ranking"][0]["node"] == "/conv_stem/Conv"
    for part in ("val", "confirm"):
        a = g["gate_after"][part]
        assert a["passed"] is True and a["top1_drop_pp"] <= 1.0 and a["escapes_int8"] <= a["escapes_fp32"]
    assert g["gate_after"]["val"]["images"] == 268
    assert g["gate_after"]["select"]["images"] + g["gate_after"]["confirm"]["images"] == 268
    assert 0.97 < rep["precision"]["int8_mac_share"] < 0.975
    q = tmp_path / "out" / "model.int8.onnx"
    require_valid_qdq(q)
    assert resolve_spec(q).mean == (0.485, 0.456, 0.406)  # the spec travels in the Q/DQ model


def test_yolo_qdq_graph_is_valid(tmp_path: Path, yolo_path: Path, calib_dir: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "yolo.int8.onnx"
    assert main(["calibrate", str(yolo_path), "--calib", str(calib_dir), "--calib-images", "100", "--out", str(out),
                 "--no-cache", "--no-progress"]) == 0
    assert "graph check OK" in capsys.readouterr().out
    m = onnx.load(str(out))
    s = require_valid_qdq(m)
    assert s.weights_checked == 40  # 39 Conv + the Gemm; the two attention MatMuls are activation x activation
    spec = resolve_spec(out)
    assert spec.resize == "center_crop" and spec.output == "probabilities" and spec.input_name == "images"
