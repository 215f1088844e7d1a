"""``edgeqc bench --quick`` runs every item for correctness only: JSON structure and counts, no speed.

A tiny ONNX classifier (tiny_models) over a small labelled folder of rendered PNGs, so the test
needs neither ../shared nor the demo model; real ONNX Runtime, real pty pair, real ZeroMQ.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_models import make_classifier, write_labelled_images

from edge.cli import main

pytestmark = pytest.mark.timeout(300)

LABELS = ["a", "b", "c", "d", "e"]


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    tmp = tmp_path_factory.mktemp("bench")
    model = make_classifier(tmp / "tiny.onnx", classes=5)
    (tmp / "labels.txt").write_text("\n".join(LABELS) + "\n")
    images = write_labelled_images(tmp / "images", LABELS, 20)
    out = tmp / "bench.json"
    code = main(["bench", "--model", str(model), "--images", str(images), "--quick", "--pass-class", "a",
                 "--calib", str(images), "--cache-dir", str(tmp / "cache"), "--json", str(out), "--no-progress"])
    assert code == 0
    return json.loads(out.read_text()), str(tmp)


def test_structure_and_environment(bench_json) -> None:
    r, _ = bench_json
    for key in ("machine", "versions", "load_average_start", "load_average_end", "decode", "preprocess_alloc",
                "item1_bare_vs_pipeline", "item2_trigger", "item3_fp32_vs_int8", "item5_noop_overhead",
                "item6_memory", "targets"):
        assert key in r, key
    assert r["versions"]["onnxruntime"] and r["machine"]["usable_cpus"] >= 1
    assert r["decode"]["frames"] == 20 and r["decode"]["decode_ms"]["count"] == 20
    assert r["model_spec"]["input_size"] == [8, 8]
    assert [t["target"] for t in r["targets"]][:2] == ["pipeline throughput / bare throughput",
                                                       "no-op pipeline overhead per frame (model input [8, 8])"]
    assert all(t["ok"] in (True, False, None) for t in r["targets"]) and len(r["targets"]) == 7


def test_bare_vs_pipeline_counts(bench_json) -> None:
    i1 = bench_json[0]["item1_bare_vs_pipeline"]
    assert i1["bare"]["rounds"] == i1["pipeline"]["rounds"] == 2
    assert i1["bare"]["frames_per_round"] == i1["pipeline"]["frames_per_round"] == 6
    assert len(i1["throughput_ratio_per_round"]) == 2 and i1["throughput_ratio"] > 0
    # each round timed in its steady state (after STEADY_SKIP = 2 completions), on both sides
    lo, hi = i1["throughput_ratio_ci90"]
    assert lo <= i1["throughput_ratio"] <= hi
    for side in ("bare", "pipeline"):
        assert 0 < i1[side]["steady_ms_per_frame_median"]
    assert i1["bare"]["latency_ms"]["count"] == 12
    # warm-up block (5) + 2 rounds x 6 frames, one batch each, one RES,<seq> telegram each
    assert i1["pipeline_stats"]["batches"] == 17 and i1["pipeline_stats"]["infer_errors"] == 0
    assert i1["plc_free_run_results"] == 17
    assert i1["pipeline_stages_ms"]["infer"]["count"] == 12


def test_trigger_run_answers_every_part(bench_json) -> None:
    i2 = bench_json[0]["item2_trigger"]
    plc = i2["plc"]
    assert plc["triggers"] == plc["answered"] == 40  # 2 blocks of 1 s at 20/s
    assert plc["missing"] == plc["late"] == plc["duplicates"] == plc["bad_checksum"] == 0
    assert plc["failsafe"] == {}
    assert i2["trigger_to_res_ms"]["count"] == 40 and i2["bare_paced_ms"]["count"] == 40
    # the reference counts from each call's scheduled instant: never shorter than the call alone
    resp, call = i2["bare_paced_ms"], i2["bare_paced_call_ms"]
    assert call["count"] == 40 and all(resp[q] >= call[q] for q in ("p50", "p99", "max"))
    assert i2["stages_ms"]["infer"]["count"] == 40
    t = i2["trigger_to_res_ms"]
    assert t["p50"] <= t["p99"] <= t["max"]
    assert set(i2["sinks_ms"]) >= {"publisher", "rejectarchive"}
    # the station's own clock: each part's RES was written before the PLC read it (same
    # CLOCK_MONOTONIC in both processes), and no earlier than its TRG was written
    s = i2["samples_ms"]
    assert len(s["trigger_to_res"]) == len(s["trigger_to_res_written"]) == len(s["bare_paced"]) == 40
    kept = i2["res_written_from_plc_figure"]
    assert 0 <= kept < 40
    assert all(0.0 < w <= p for w, p in zip(s["trigger_to_res_written"], s["trigger_to_res"]))
    # the station's clock was used (the write wakes the PLC, which may read before the writer
    # takes its time: then the PLC's figure is the closer bound and is kept)
    assert any(w < p for w, p in zip(s["trigger_to_res_written"], s["trigger_to_res"]))


def test_pooled_runs_keep_the_p99_and_double_the_samples(bench_json, tmp_path) -> None:
    import copy
    import subprocess
    import sys

    r, _ = bench_json
    tool = Path(__file__).resolve().parents[1] / "tools" / "bench_pool.py"

    def pool(*files: Path | str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(tool), *map(str, files)], capture_output=True, text=True,
                              timeout=120)

    quick = tmp_path / "quick.json"
    quick.write_text(json.dumps(r), encoding="utf-8")
    runs = []
    for i in range(2):  # two "measurement" runs with the same samples (started at different times)
        other = copy.deepcopy(r)
        other["sizes"]["quick"] = False
        other["started"] = f"2026-11-30T10:0{i}:00+0000"
        runs.append(tmp_path / f"run{i}.json")
        runs[-1].write_text(json.dumps(other), encoding="utf-8")
    out = pool(runs[0], runs[1], runs[1], quick)
    assert out.returncode == 0, out.stderr
    p99 = r["item2_trigger"]["trigger_to_res_ms"]["p99"]
    assert f"p99 {p99:.2f} ms (80 parts)" in out.stdout  # two runs: same nearest-rank p99, twice the parts
    assert "bare paced p99" in out.stdout and "(80 calls)" in out.stdout
    rounds = r["item1_bare_vs_pipeline"]["throughput_ratio_per_round"]
    import statistics
    assert f"median {statistics.median(rounds * 2):.3f} of 4 rounds" in out.stdout  # both runs' rounds
    assert f"{runs[1]}: the same run as {runs[1]}" in out.stderr and f"{quick}: a --quick run" in out.stderr
    assert pool(quick).returncode == 1  # nothing left to pool
    bad = tmp_path / "bad.json"
    for content, says in (("not json", "not JSON"), ("[1, 2]", "top level is list")):
        bad.write_text(content, encoding="utf-8")
        res = pool(bad)
        assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr
    bad.write_text(json.dumps({"item2_trigger": {"samples_ms": {"trigger_to_res": ["x", None], "bare_paced": [1.0]}}}),
                   encoding="utf-8")
    res = pool(bad)
    assert res.returncode == 1 and "not a number: skipped" in res.stderr and "nothing to pool" in res.stderr
    res = pool(tmp_path / "missing.json")
    assert res.returncode == 2 and "cannot read" in res.stderr and "Traceback" not in res.stderr


def test_precision_item_made_and_evaluated_int8(bench_json) -> None:
    r, tmp = bench_json
    i3 = r["item3_fp32_vs_int8"]
    assert Path(i3["int8_model"]).is_file() and Path(i3["int8_model"]).is_relative_to(tmp)
    assert "made by the bench" in i3["int8_origin"]
    assert i3["latency_ms"]["fp32"]["count"] == i3["latency_ms"]["int8"]["count"] == 8
    assert i3["cpu_choice"] in ("fp32", "int8")
    acc = i3["accuracy"]
    assert acc["fp32"]["images"] == acc["int8"]["images"] == 20
    assert acc["top1_drop_pp"] == pytest.approx(acc["fp32"]["top1"] - acc["int8"]["top1"], abs=0.011)


def test_noop_and_memory(bench_json) -> None:
    r, _ = bench_json
    i5 = r["item5_noop_overhead"]
    for variant in ("input_size", "native"):
        assert i5[variant]["rounds"] == 2 and i5[variant]["frames_per_round"] == 20
        assert i5[variant]["pipeline_stats"]["batches"] == 20 + 2 * 20  # warm-up + rounds
    assert r["preprocess_alloc"]["zero_frame_sized"] is True
    assert r["item6_memory"]["peak_rss_mib"] > 0
    assert r["item2_trigger"]["rss"]["samples"] >= 1


def test_quick_run_does_not_judge_the_targets(bench_json) -> None:
    from edge.bench.report import format_table

    r, _ = bench_json
    assert r["sizes"]["quick"] is True
    text = format_table(r)
    assert "not judged, --quick sizes are a correctness run" in text
    assert "[FAIL]" not in text and "[PASS]" not in text
    assert text.count("[n/a ]") == 7
    assert [t["ok"] for t in r["targets"]] == [None] * 7  # the JSON does not judge them either
    assert 'targets (BENCHMARKS.md, "Which targets hold"): not judged' in text
    assert "p99_difference_ms" in r["item2_trigger"] and len(r["item2_trigger"]["p99_difference_ms"]["ci"]) == 2


@pytest.mark.parametrize(("choice", "fp32", "int8", "ok"), [
    ("fp32", 2.0, 2.5, True), ("int8", 2.0, 1.5, True),
    ("fp32", 2.0, 1.5, False), ("int8", 2.0, 2.5, False),
    ("fp32", 2.0, 1.96, True),  # INT8 2 % faster: within the selector's 3 % tie margin, FP32 kept
    ("fp32", 2.0, 1.9, False)])  # INT8 5 % faster: keeping FP32 is a wrong choice
def test_cpu_choice_target_compares_with_the_faster_p50(choice, fp32, int8, ok) -> None:
    from edge.bench.report import targets

    r = {"sizes": {"quick": False}, "item3_fp32_vs_int8": {
        "cpu_choice": choice, "latency_ms": {"fp32": {"p50": fp32}, "int8": {"p50": int8}}}}
    t = targets(r)[-1]
    assert t["target"] == "CPU runs the faster of FP32 / INT8" and t["ok"] is ok
    assert t["measured"] == (f"picks {choice}, faster: {'fp32' if fp32 < int8 else 'int8'} "
                             f"(p50 FP32 {fp32} ms, INT8 {int8} ms)")
    assert t["required"].startswith("the choice's p50 in item 3 <= the other's x 1.03")
    r["sizes"]["quick"] = True
    assert targets(r)[-1]["ok"] is None
