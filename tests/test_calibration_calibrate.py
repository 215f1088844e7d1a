"""Calibration on a tiny conv net with real ONNX Runtime: Q/DQ output + checks + metadata, cache
reuse, tiny-set refusal, corrupt images skipped and counted, histogram methods, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from qdq_models import corrupt_images, make_convnet, make_images

from calibration.cache import RangeCache
from calibration.calibrate import CalibrationError, calibration_report, prepare_ranges, write_qdq_model
from calibration.qdq_check import require_valid_qdq
from calibration.quantize import read_provenance
from calibration.ranges import CalibSettings
from edge.model_spec import resolve_spec, spec_from_metadata


@pytest.fixture()
def convnet(tmp_path: Path) -> Path:
    return make_convnet(tmp_path / "model" / "net.onnx")


@pytest.fixture()
def calib(tmp_path: Path) -> Path:
    make_images(tmp_path / "calib", 12)
    return tmp_path / "calib"


def test_qdq_model_is_checked_and_carries_the_spec(tmp_path: Path, convnet: Path, calib: Path) -> None:
    spec = resolve_spec(convnet)
    r = prepare_ranges(convnet, calib, spec, CalibSettings("minmax"), min_images=10,
                       cache=RangeCache(tmp_path / "cache"))
    q = write_qdq_model(convnet, r, tmp_path / "out" / "net.int8.onnx", spec, exclude=["fc"])
    m = onnx.load(str(q.path))
    assert spec_from_metadata({p.key: p.value for p in m.metadata_props}) == spec
    assert resolve_spec(q.path) == spec  # the Q/DQ model needs no config any more
    prov = read_provenance(m)
    assert prov["excluded"] == ["fc"] and prov["calib_images"] == 12 and prov["method"] == "minmax"
    assert require_valid_qdq(m).weights_checked == 2  # conv1, conv2 (fc excluded)
    assert q.stats.float_layers == ("fc",)
    assert 0.95 < q.stats.int8_mac_share < 1.0
    rep = calibration_report(convnet, r, q, spec, min_images=10)
    assert rep["calibration_set"]["used"] == 12 and rep["calibration_set"]["skipped"] == 0
    assert rep["cache"]["hit"] is False and rep["qdq_check"]["ok"] is True
    assert rep["excluded_nodes"] == ["fc"] and "input" in rep["activation_scales"]
    assert rep["calibration_set"]["sha256"] == r.calib_sha256 and rep["model"]["sha256"] == r.model_sha256


def test_second_run_reuses_cached_ranges(tmp_path: Path, convnet: Path, calib: Path) -> None:
    spec = resolve_spec(convnet)
    cache = RangeCache(tmp_path / "cache")
    first = prepare_ranges(convnet, calib, spec, CalibSettings("minmax"), min_images=10, cache=cache)
    stamp = first.path.stat().st_mtime_ns
    second = prepare_ranges(convnet, calib, spec, CalibSettings("minmax"), min_images=10, cache=cache)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert second.path == first.path and second.path.stat().st_mtime_ns == stamp
    assert second.used == first.used and len(second.used) == 12
    # different settings or different images -> new key, recalibrated
    third = prepare_ranges(convnet, calib, spec, CalibSettings("minmax", max_images=10), min_images=10, cache=cache)
    assert not third.cache_hit and third.key != first.key and len(third.used) == 10
    make_images(calib, 1, seed=99)  # overwrites img_0000.png with other pixels
    fourth = prepare_ranges(convnet, calib, spec, CalibSettings("minmax"), min_images=10, cache=cache)
    assert not fourth.cache_hit and fourth.calib_sha256 != first.calib_sha256


def test_too_few_usable_images_is_an_error(tmp_path: Path, convnet: Path) -> None:
    make_images(tmp_path / "few", 5)
    corrupt_images(tmp_path / "few")
    with pytest.raises(CalibrationError, match=r"few: 5 usable image\(s\), 2 unreadable skipped, of 7 files; at "
                                               r"least 100 are required \(--min-images"):
        prepare_ranges(convnet, tmp_path / "few", resolve_spec(convnet), CalibSettings())


def test_corrupt_images_are_skipped_and_counted(tmp_path: Path, convnet: Path, calib: Path) -> None:
    corrupt_images(calib)
    spec = resolve_spec(convnet)
    r = prepare_ranges(convnet, calib, spec, CalibSettings(), min_images=10, cache=RangeCache(None))
    try:
        assert r.found == 14 and len(r.used) == 12
        assert r.skipped == ["zz_garbage.png", "zz_truncated.jpg"]
        q = write_qdq_model(convnet, r, tmp_path / "q.onnx", spec)
        rep = calibration_report(convnet, r, q, spec, min_images=10)
        assert rep["calibration_set"]["skipped_files"] == ["zz_garbage.png", "zz_truncated.jpg"]
    finally:
        r.close()


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_methods_in_chunks(tmp_path: Path, convnet: Path, calib: Path, method: str) -> None:
    spec = resolve_spec(convnet)
    r = prepare_ranges(convnet, calib, spec, CalibSettings(method, chunk_images=5), min_images=10,
                       cache=RangeCache(tmp_path / "c"))
    q = write_qdq_model(convnet, r, tmp_path / f"{method}.onnx", spec)
    assert q.check.ok and r.method == method
    from onnxruntime.quantization import load_tensors_data

    from calibration.ranges import ort_method

    assert load_tensors_data(r.path).calibration_method == ort_method(method)


def test_calibrate_cli_writes_model_and_report(tmp_path: Path, convnet: Path, calib: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from edge.cli import main

    out = tmp_path / "o" / "net.int8.onnx"
    args = ["calibrate", str(convnet), "--calib", str(calib), "--out", str(out), "--min-images", "10",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(args) == 0
    assert "12 images used, 0 unreadable skipped (of 12)" in capsys.readouterr().out
    rep = json.loads((tmp_path / "o" / "net.int8.report.json").read_text())
    assert rep["cache"]["hit"] is False and rep["output"]["path"] == str(out)
    assert main(args) == 0
    assert "ranges from cache (no calibration run)" in capsys.readouterr().out
    assert json.loads((tmp_path / "o" / "net.int8.report.json").read_text())["cache"]["hit"] is True
    assert main(["calibrate", str(convnet), "--calib", str(calib), "--out", str(out), "--no-progress",
                 "--cache-dir", str(tmp_path / "cache")]) == 1
    assert "at least 100 are required" in capsys.readouterr().err
    assert main(["calibrate", str(convnet), "--calib", str(tmp_path / "missing"), "--no-progress"]) == 1
    assert "image folder not found" in capsys.readouterr().err




def test_modelopt_method_needs_modelopt(tmp_path: Path, convnet: Path, calib: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from calibration.modelopt_quant import modelopt_available
    from edge.cli import main

    if modelopt_available():
        pytest.skip("ModelOpt is installed here")
    assert main(["calibrate", str(convnet), "--calib", str(calib), "--method", "modelopt-entropy",
                 "--out", str(tmp_path / "m.onnx"), "--no-progress"]) == 1
    assert "--method modelopt-entropy needs NVIDIA ModelOpt" in capsys.readouterr().err
