"""A gate-refused INT8 model: written as ``<name>.int8.refused.onnx`` (never under the accepted
name), its ``edgeqc.gate`` metadata says refused, ``edgeqc info`` shows it, and
``edgeqc build --from-int8`` refuses it (exit 3) unless ``--force``. Tiny conv net, real ONNX
Runtime; TensorRT faked for the engine step only."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from fake_trt_builder import make_fake_tensorrt
from qdq_models import make_convnet, make_images

from calibration.evaluate import OrtClassifier
from calibration.quantize import GATE_KEY, read_gate
from edge.cli import main
from edge.frames import read_image
from edge.model_spec import resolve_spec
from edge.preprocess import preprocess
from trt_build import engine_step
from trt_build.pipeline import EXIT_GATE_REFUSED, EXIT_NO_TENSORRT, EXIT_OK


def _fp32_class(model: Path, files: list[Path]) -> str:
    spec = resolve_spec(model)
    x = np.stack([preprocess(read_image(f), spec) for f in files])  # type: ignore[arg-type]
    pred = set(OrtClassifier(model, spec).predict_all(x).tolist())
    assert len(pred) == 1  # the tiny net gives every random image the same class
    return spec.labels[pred.pop()]


@pytest.fixture()
def refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A build the gate refuses: calibration images nearly black (tiny ranges), so INT8 saturates
    on the bright val images; every val image sits under FP32's own answer (FP32 top-1 100 %)."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    m = make_convnet(tmp_path / "model" / "net.onnx")
    rng = np.random.default_rng(0)
    (tmp_path / "calib").mkdir()
    for i in range(10):
        assert cv2.imwrite(str(tmp_path / "calib" / f"dark_{i}.png"), rng.integers(0, 3, (24, 32, 3), np.uint8))
    files = make_images(tmp_path / "tmpval", 12)
    cls = _fp32_class(m, files)
    (tmp_path / "val").mkdir()
    (tmp_path / "tmpval").rename(tmp_path / "val" / cls)
    out = tmp_path / "out"
    args = ["build", str(m), "--calib", str(tmp_path / "calib"), "--val", str(tmp_path / "val"), "--out", str(out),
            "--min-images", "10", "--pass-class", "good", "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    return {"args": args, "out": out}  # type: ignore[dict-item]


def test_refused_model_is_renamed_marked_and_blocked(refused: dict, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out: Path = refused["out"]
    out.mkdir()
    (out / "net.int8.onnx").write_bytes(b"an accepted model of an earlier build")
    assert main(refused["args"]) == EXIT_GATE_REFUSED
    text = capsys.readouterr().out
    rej = out / "net.int8.refused.onnx"
    assert f"the refused model is kept as {rej} (not net.int8.onnx; its edgeqc.gate metadata says refused)" in text
    assert sorted(p.name for p in out.iterdir()) == ["net.int8.refused.onnx", "net.int8.report.json"]
    gate = read_gate(onnx.load(str(rej)))
    assert gate is not None and gate["passed"] is False and gate["tool"] == "edgeqc build"
    assert gate["thresholds"] == {"max_top1_drop": 1.0, "max_escape_rise": 0.0}
    val = gate["gates"]["val"]
    assert (val["images"], val["passed"], val["top1_fp32"]) == (12, False, 100.0)
    assert val["top1_drop_pp"] > 1.0
    rep = json.loads((out / "net.int8.report.json").read_text())
    assert rep["gate"]["passed"] is False and rep["output"]["path"] == str(rej)
    assert rep["evaluation"]["models"]["INT8"]["path"] == str(rej)

    # edgeqc info shows the outcome
    assert main(["info", str(rej)]) == 0
    assert ("  accuracy gate: REFUSED (`edgeqc build --from-int8` refuses it without --force) (val 12 images: "
            f"top-1 drop {val['top1_drop_pp']} pp, escape rise {val['escape_rise_pp']} pp; allowed top-1 drop 1.0 pp, "
            "escape rise 0.0 pp)") in capsys.readouterr().out
    assert main(["info", str(rej), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gate"]["passed"] is False

    # --from-int8 refuses it, also when renamed to the accepted name: the metadata decides
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.3.0.30"))
    monkeypatch.setattr(engine_step, "query_gpu", lambda device=0: ("Orin (nvgpu)", (8, 7)))
    disguised = out / "copy" / "net.int8.onnx"
    disguised.parent.mkdir()
    disguised.write_bytes(rej.read_bytes())
    for p in (rej, disguised):
        assert main(["build", "--from-int8", str(p), "--out", str(out / "dev")]) == EXIT_GATE_REFUSED
        text = capsys.readouterr().out
        assert f"REFUSED: {p} was refused by the accuracy gate (val: top-1 drop {val['top1_drop_pp']} pp" in text
        assert "pass --force to build it anyway" in text and "exit code 3: accuracy gate refused" in text
    assert not (out / "dev").exists()
    # --force: built knowingly, and the sidecar says so
    assert main(["build", "--from-int8", str(rej), "--out", str(out / "dev"), "--force"]) == EXIT_OK
    assert "WARNING: the accuracy gate REFUSED this model; building anyway (--force)" in capsys.readouterr().out
    side = json.loads((out / "dev" / "net.int8.refused.engine.json").read_text())
    assert side["build"]["quantization"]["gate"]["passed"] is False


def test_accepted_model_records_passed_and_replaces_a_refused_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from qdq_models import LABELS

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    m = make_convnet(tmp_path / "model" / "net.onnx")
    make_images(tmp_path / "calib", 12)
    make_images(tmp_path / "val", 12, classes=LABELS, seed=3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "net.int8.refused.onnx").write_bytes(b"refused by an earlier build")
    assert main(["build", str(m), "--calib", str(tmp_path / "calib"), "--val", str(tmp_path / "val"), "--out",
                 str(out), "--min-images", "10", "--pass-class", "good", "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress", "--max-top1-drop", "100", "--max-escape-rise", "100"]) == EXIT_NO_TENSORRT
    assert sorted(p.name for p in out.iterdir()) == ["net.int8.onnx", "net.int8.report.json"]
    model = onnx.load(str(out / "net.int8.onnx"))
    gate = read_gate(model)
    assert gate is not None and gate["passed"] is True and gate["gates"]["val"]["images"] == 12
    assert json.loads({p.key: p.value for p in model.metadata_props}[GATE_KEY]) == gate
    capsys.readouterr()
    assert main(["info", str(out / "net.int8.onnx")]) == 0
    assert "  accuracy gate: PASSED (val 12 images: top-1 drop" in capsys.readouterr().out
    # an INT8 model without the record (e.g. `edgeqc calibrate`) is not blocked, but info says so
    assert main(["calibrate", str(m), "--calib", str(tmp_path / "calib"), "--out", str(tmp_path / "c.int8.onnx"),
                 "--min-images", "10", "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "c.int8.onnx")]) == 0
    assert ("  accuracy gate: unknown (no edgeqc.gate metadata: not gated by `edgeqc build`)"
            in capsys.readouterr().out)
