"""``edgeqc build`` / ``edgeqc info`` on a tiny conv net: the stop without TensorRT (exit 4, the
``--from-int8`` hint), ``--from-int8`` with TensorRT faked (engine + sidecar carrying the
calibration record), ``info`` on ONNX / engine / sidecar including the mismatch messages."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
from fake_trt_builder import make_fake_tensorrt
from qdq_models import LABELS, make_convnet, make_images

from edge.cli import main
from trt_build import engine_step
from trt_build.info import EXIT_NOT_RUNNABLE
from trt_build.pipeline import EXIT_NO_TENSORRT, EXIT_OK


@pytest.fixture()
def setup(tmp_path: Path) -> dict[str, Path]:
    m = make_convnet(tmp_path / "model" / "net.onnx")
    make_images(tmp_path / "calib", 12)
    make_images(tmp_path / "val", 12, classes=LABELS, seed=3)
    return {"model": m, "calib": tmp_path / "calib", "val": tmp_path / "val", "out": tmp_path / "out",
            "cache": tmp_path / "cache"}


def _build_args(s: dict[str, Path], *extra: str) -> list[str]:
    return ["build", str(s["model"]), "--calib", str(s["calib"]), "--val", str(s["val"]), "--out", str(s["out"]),
            "--min-images", "10", "--pass-class", "good", "--cache-dir", str(s["cache"]), "--no-progress",
            "--max-top1-drop", "100", "--max-escape-rise", "100", *extra]


def test_build_without_tensorrt_stops_with_exit_4(monkeypatch: pytest.MonkeyPatch, setup: dict[str, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(_build_args(setup)) == EXIT_NO_TENSORRT == 4
    out = capsys.readouterr().out
    int8 = setup["out"] / "net.int8.onnx"
    assert "top-1 accuracy" in out and "confusion matrix INT8" in out  # the evaluation table is printed
    assert "gate val (12 images)" in out and ": PASSED" in out
    assert "STOP: TensorRT is not installed here" in out
    assert f"  edgeqc build --from-int8 {int8} --out DIR" in out
    assert "exit code 4: engine not built here (no TensorRT)" in out
    rep = json.loads((setup["out"] / "net.int8.report.json").read_text())
    assert rep["gate"]["passed"] is True and rep["gate"]["gate_after"]["val"]["images"] == 12
    assert rep["evaluation"]["models"]["INT8"]["images"] == 12 and rep["cache"]["hit"] is False
    assert not list(setup["out"].glob("*.engine"))
    # second build: ranges from the cache
    assert main(_build_args(setup)) == 4
    assert "ranges from cache" in capsys.readouterr().out
    assert json.loads((setup["out"] / "net.int8.report.json").read_text())["cache"]["hit"] is True


def test_build_needs_calib_and_val(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", str(setup["model"]), "--out", str(setup["out"])]) == 1
    assert "an INT8 build needs --calib DIR" in capsys.readouterr().err
    assert main(["build", "--out", str(setup["out"])]) == 2


def test_accuracy_aware_needs_a_splittable_folder(monkeypatch: pytest.MonkeyPatch, setup: dict[str, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(_build_args(setup, "--accuracy-aware", "--min-per-class", "5")) == 1
    err = capsys.readouterr().err
    assert "too small to split" in err and "good (4), scratch (4), dent (4) have fewer than 5 images" in err


def test_from_int8_builds_engine_and_info_reports_it(monkeypatch: pytest.MonkeyPatch, setup: dict[str, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(_build_args(setup, "--exclude", "fc")) == 4
    int8 = setup["out"] / "net.int8.onnx"
    rep = json.loads((setup["out"] / "net.int8.report.json").read_text())
    capsys.readouterr()

    # on the "device": TensorRT (fake) and a GPU
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.3.0.30"))
    monkeypatch.setattr(engine_step, "query_gpu", lambda device=0: ("Orin (nvgpu)", (8, 7)))
    dev = setup["out"].parent / "device"
    assert main(["build", "--from-int8", str(int8), "--out", str(dev), "--max-batch", "4"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "graph check OK" in out and "float layers: ['fc']" in out
    engine = dev / "net.int8.engine"
    side = json.loads((dev / "net.int8.engine.json").read_text())
    assert side["precision"] == "int8" and side["calib_sha256"] == rep["calibration_set"]["sha256"]
    assert side["model_spec"]["labels"] == list(LABELS)
    assert side["build"]["quantization"]["provenance"]["excluded"] == ["fc"]
    assert side["build"]["profile"][0]["max"] == [4, 3, 16, 16]
    assert json.loads(engine.read_bytes())["network_flags"] == 2  # strongly typed

    assert main(["info", str(engine)]) == 0
    info = capsys.readouterr().out
    assert "built with TensorRT 10.3.0.30 on Orin (nvgpu) (compute capability 8.7), precision int8" in info
    assert "runs here: yes" in info
    assert main(["info", str(dev / "net.int8.engine.json"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] == "sidecar" and d["compatible_here"] is True and d["tensorrt_here"] == "10.3.0.30"

    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.3.0.31"))
    engine.write_bytes(engine.read_bytes() + b" ")
    assert main(["info", str(engine)]) == EXIT_NOT_RUNNABLE == 3
    info = capsys.readouterr().out
    assert "runs here: NO" in info
    assert "TensorRT version mismatch: engine built with TensorRT 10.3.0.30, this device runs TensorRT 10.3.0.31" in info
    assert "plan sha256 mismatch" in info


def test_info_on_onnx_models(setup: dict[str, Path], capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(["info", str(setup["model"])]) == 0
    out = capsys.readouterr().out
    assert "input  'input' ['N', 3, 16, 16] float32" in out and "INT8: 0 layers" in out
    main(_build_args(setup))
    capsys.readouterr()
    assert main(["info", str(setup["out"] / "net.int8.onnx"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["precision"] == "int8" and d["qdq_check"]["ok"] is True and d["compute"]["int8_mac_share"] == 1.0
    assert d["model_spec"]["labels"] == list(LABELS) and d["quantization"]["method"] == "minmax"
    assert main(["info", str(setup["out"] / "missing.engine")]) == 1
    assert "no such file" in capsys.readouterr().err
    (setup["out"] / "lonely.engine").write_bytes(b"plan")
    assert main(["info", str(setup["out"] / "lonely.engine")]) == EXIT_NOT_RUNNABLE
    out = capsys.readouterr().out
    assert "lonely.engine.json is missing, so the TensorRT version, GPU and plan hash" in out
    assert "  runs here: NO (the runtime refuses an engine without a readable, well-formed sidecar)" in out


def test_info_names_malformed_sidecar_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    side = {"trt_version": "10.3.0.30", "device_name": "Orin", "compute_capability": "x", "precision": "int8",
            "plan_sha256": hashlib.sha256(b"plan").hexdigest(), "model_spec": {}, "inputs": [], "outputs": [],
            "build": {"profile": [{"name": "input"}]}}
    (tmp_path / "m.engine.json").write_text(json.dumps(side))
    assert main(["info", str(engine)]) == EXIT_NOT_RUNNABLE
    out = capsys.readouterr().out
    assert (f"  engine {engine}: sidecar {tmp_path / 'm.engine.json'} is malformed: sidecar field compute_capability "
            "= 'x': expected [major, minor], two integers, e.g. [8, 7]; sidecar field build.profile = "
            "[{'name': 'input'}]: expected a list of {name, min, opt, max} objects. Rebuild the engine with "
            "`edgeqc build` (it writes the sidecar).") in out
    assert "  runs here: NO" in out
    for cc in ([8], [8, "7"], None):
        side = {**side, "compute_capability": cc, "build": {}}
        (tmp_path / "m.engine.json").write_text(json.dumps(side))
        assert main(["info", str(tmp_path / "m.engine.json")]) == EXIT_NOT_RUNNABLE
        assert f"sidecar field compute_capability = {cc!r}: expected [major, minor]" in capsys.readouterr().out
    # well-formed: described, and it runs as far as this machine can tell (no TensorRT, no GPU here)
    (tmp_path / "m.engine.json").write_text(json.dumps({**side, "compute_capability": [8, 7]}))
    assert main(["info", str(engine)]) == 0
    assert "(compute capability 8.7)" in capsys.readouterr().out
