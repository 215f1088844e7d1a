"""Accuracy-aware INT8 on a synthetic model whose first layer cannot take an int8 input (the same
failure as mt-effnet-lite0's stem): the gate refuses plain INT8, the SQNR ranking puts that layer
first, the search keeps it in float, the result passes on the confirm half and the whole folder
and still passes the Q/DQ checks. Also the CLI exit codes 3 and 4 and the float-layer limit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import onnx
import pytest
from qdq_models import make_diff_images, make_diffnet

from calibration.accuracy_aware import SearchOptions, load_labelled, quantize_and_gate
from calibration.cache import RangeCache
from calibration.calibrate import prepare_ranges
from calibration.gate import GateThresholds
from calibration.qdq_check import require_valid_qdq
from calibration.quantize import read_provenance
from calibration.ranges import CalibSettings
from calibration.sensitivity import rank_layers
from edge.cli import main
from edge.model_spec import resolve_spec


@pytest.fixture()
def diff(tmp_path: Path) -> dict[str, Path]:
    m = make_diffnet(tmp_path / "m" / "diff.onnx")
    make_diff_images(tmp_path / "calib", 12, labelled=False)
    make_diff_images(tmp_path / "val", 16, labelled=True, seed=1)
    return {"model": m, "calib": tmp_path / "calib", "val": tmp_path / "val", "out": tmp_path / "out"}


def test_search_keeps_the_costly_layer_in_float(diff: dict[str, Path]) -> None:
    spec = resolve_spec(diff["model"])
    ranges = prepare_ranges(diff["model"], diff["calib"], spec, CalibSettings(), min_images=10,
                            cache=RangeCache(None), keep_data=True)
    val = load_labelled(diff["val"], spec, ["good"])
    try:
        g = quantize_and_gate(diff["model"], ranges, spec, val, diff["out"] / "diff.int8.onnx",
                              thresholds=GateThresholds(), accuracy_aware=True, options=SearchOptions(proxy_images=8))
    finally:
        val.close()
        ranges.close()
    before = g.plain_gates
    assert not before["val"].passed and before["val"].int8.top1 == pytest.approx(56.25)
    assert (before["val"].fp32.escapes, before["val"].int8.escapes) == (0, 7)
    assert [r.name for r in g.ranking] == ["diff", "mix", "fc"]
    assert g.ranking[0].sqnr_db < 1.0 and g.ranking[1].sqnr_db > 60.0
    assert g.search is not None and g.search.stopped == "gate passed"
    assert [(t.node, t.accepted) for t in g.search.trials] == [("diff", True)]
    assert g.passed and g.qdq.excluded == ("diff",)
    for part in ("val", "select", "confirm"):
        assert g.gates[part].passed and g.gates[part].int8.top1 == 100.0
    assert (g.gates["select"].fp32.images, g.gates["confirm"].fp32.images) == (8, 8)
    # the chosen graph is still TensorRT-valid and says what was excluded
    m = onnx.load(str(g.qdq.path))
    assert require_valid_qdq(m).weights_checked == 2  # mix, fc
    prov = read_provenance(m)
    assert prov["accuracy_aware"] is True and prov["excluded"] == ["diff"]
    assert prov["gate_before"]["val"]["passed"] is False
    assert g.qdq.stats.float_layers == ("diff",)
    s = g.summary()
    assert s["excluded_nodes"] == ["diff"] and s["gate_after"]["confirm"]["passed"] is True
    assert s["search"]["ranking"][0]["node"] == "diff" and s["search"]["trials"][0]["accepted"] is True


def test_rank_layers_worst_first(diff: dict[str, Path], tmp_path: Path) -> None:
    from calibration.calibrate import load_calibration_rows, write_qdq_model

    spec = resolve_spec(diff["model"])
    r = prepare_ranges(diff["model"], diff["calib"], spec, CalibSettings(), min_images=10, cache=RangeCache(None))
    q = write_qdq_model(diff["model"], r, tmp_path / "q.onnx", spec)
    rows = load_calibration_rows(r, spec, 6)
    ranking = rank_layers(diff["model"], q.path, list(rows.batches(3)), input_name="input")
    assert [x.name for x in ranking] == ["diff", "mix", "fc"]
    assert ranking[0].cosine < 0.9 and ranking[1].cosine > 0.9999  # int8 input erased the R-G difference
    r.close()


def _args(d: dict[str, Path], *extra: str) -> list[str]:
    return ["build", str(d["model"]), "--calib", str(d["calib"]), "--val", str(d["val"]), "--out", str(d["out"]),
            "--min-images", "10", "--pass-class", "good", "--no-cache", "--no-progress", "--proxy-images", "8",
            *extra]


def test_cli_refuses_then_accuracy_aware_passes(monkeypatch: pytest.MonkeyPatch, diff: dict[str, Path],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(_args(diff)) == 3
    out = capsys.readouterr().out
    assert ("gate val (16 images): top-1 FP32 100.00 % -> INT8 56.25 % (drop +43.75 pp, over 1.00 allowed); "
            "defect escapes 0/8 -> 7/8 (+87.50 pp, over 0.00 allowed)") in out
    assert "Try --accuracy-aware" in out and "exit code 3: accuracy gate refused" in out

    assert main(_args(diff, "--accuracy-aware")) == 4
    out = capsys.readouterr().out
    assert "try float diff: selection top-1 100.0 %, escapes 0, false rejects 0 -> kept" in out
    assert "layers kept in float: ['diff']" in out
    assert "gate confirm (8 images): top-1 FP32 100.00 % -> INT8 100.00 %" in out
    rep = json.loads((diff["out"] / "diff.int8.report.json").read_text())
    assert rep["gate"]["passed"] is True and rep["excluded_nodes"] == ["diff"]
    assert rep["gate"]["gate_before"]["val"]["top1_int8"] == pytest.approx(56.25)


def test_cli_float_layer_limit_refuses_with_best_attempt(monkeypatch: pytest.MonkeyPatch, diff: dict[str, Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(_args(diff, "--accuracy-aware", "--max-float-layers", "0")) == 3
    out = capsys.readouterr().out
    assert "stopped: float layer limit; 0 candidate(s) tried" in out
    assert "even with the float layer limit (--max-float-layers)" in out
