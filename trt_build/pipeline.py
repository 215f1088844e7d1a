"""``edgeqc build``: calibration set -> INT8 Q/DQ model -> accuracy gate -> TensorRT engine.

Exit codes (documented in docs/build.md):

- 0 :data:`EXIT_OK` — engine and sidecar written (or, for ``--no-engine``, the gated Q/DQ model).
- 1 :data:`EXIT_ERROR` — bad input or a failed step; the message names the file/field/value.
- 2 — usage or configuration error (argparse / ``edge.cli``).
- 3 :data:`EXIT_GATE_REFUSED` — the INT8 model misses the accuracy gate; the numbers are printed
  (with ``--accuracy-aware``: even with the float layer limit; numbers of the best attempt). The
  refused model is kept as ``<name>.int8.refused.onnx`` (never under the accepted name
  ``<name>.int8.onnx``); both carry the outcome in their ``edgeqc.gate`` metadata. Also: ``--from-int8``
  on a model whose ``edgeqc.gate`` says refused (unless ``--force``).
- 4 :data:`EXIT_NO_TENSORRT` — the Q/DQ model is written and passed the gate, but TensorRT is
  not installed here: build the engine on the target device with
  ``edgeqc build --from-int8 MODEL.int8.onnx --out DIR``.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger("edgeqc.build")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_GATE_REFUSED = 3
EXIT_NO_TENSORRT = 4


@dataclass
class BuildRequest:
    """Everything ``edgeqc build`` needs (the CLI fills it; tests may too)."""

    model: Path | None
    out_dir: Path
    model_settings: Any  # edge.settings.ModelSettings
    pass_labels: list[str]
    build_options: Any  # trt_build.builder.BuildOptions
    calib: Path | None = None
    val: Path | None = None
    from_int8: Path | None = None
    calib_settings: Any = None  # calibration.ranges.CalibSettings
    method: str = "minmax"
    min_images: int = 100
    cache_dir: Path | None = None
    exclude: list[str] = field(default_factory=list)
    thresholds: Any = None  # calibration.gate.GateThresholds
    accuracy_aware: bool = False
    search: Any = None  # calibration.accuracy_aware.SearchOptions
    threads: int = 0
    progress: bool = True
    engine: bool = True
    json_out: str | None = None
    force: bool = False  # --from-int8: build even when the model's edgeqc.gate says refused


def refused_name(int8_path: Path) -> Path:
    """Where a gate-refused Q/DQ model goes: ``out/net.int8.onnx`` -> ``out/net.int8.refused.onnx``."""
    return int8_path.with_name(int8_path.name.removesuffix(".onnx") + ".refused.onnx")


def gate_record(gated: Any, thresholds: Any) -> dict[str, Any]:
    """The ``edgeqc.gate`` metadata of a gated model: ``passed``, thresholds, numbers per image set."""
    return {"passed": bool(gated.passed), "thresholds": dict(vars(thresholds)),
            "gates": {k: g.to_dict() for k, g in gated.gates.items()}, "tool": "edgeqc build"}


def _engine_name(onnx: Path) -> str:
    return onnx.name.removesuffix(".onnx") + ".engine"


def _engine_or_stop(req: BuildRequest, onnx: Path, spec: Any, *, calib_sha: str | None,
                    quantization: dict[str, Any] | None, out: Any) -> int:
    from trt_build.builder import TensorRTMissing
    from trt_build.engine_step import build_engine

    if not req.engine:
        print(f"engine step skipped (--no-engine); Q/DQ model: {onnx}", file=out)
        return EXIT_OK
    engine_path = req.out_dir / _engine_name(onnx)
    try:
        res = build_engine(onnx, engine_path, spec, req.build_options, calib_sha256=calib_sha,
                           quantization=quantization)
    except TensorRTMissing as exc:
        if req.from_int8 is not None:
            what = ""
            how = f"  edgeqc build --from-int8 {onnx} --out DIR"
        elif req.build_options.precision == "int8":
            what = f"The gated Q/DQ model is ready: {onnx}\n"
            how = f"  edgeqc build --from-int8 {onnx} --out DIR"
        else:
            what = ""
            how = (f"  edgeqc build {onnx} --precision {req.build_options.precision} --out DIR  (plus the same "
                   "model spec flags / --config)")
        print(f"\nSTOP: {exc}.\n{what}Build the engine on the target device (with the TensorRT version and GPU "
              f"that will run it):\n{how}", file=out)
        print(f"exit code {EXIT_NO_TENSORRT}: engine not built here (no TensorRT)", file=out)
        return EXIT_NO_TENSORRT
    s = res.sidecar
    print(f"engine {res.path} ({res.path.stat().st_size / 1e6:.2f} MB), sidecar {res.sidecar_path}: TensorRT "
          f"{s['trt_version']}, {s['device_name']} (compute capability {s['compute_capability'][0]}."
          f"{s['compute_capability'][1]}), precision {s['precision']}, built in {s['build']['seconds']:.1f} s",
          file=out)
    return EXIT_OK


def run_build(req: BuildRequest, out: Any = None) -> int:
    """Run ``edgeqc build`` (see the module docstring for the exit codes). Prints to ``out``
    (default stdout); expected failures raise the library's exceptions (the CLI prints them)."""
    out = out or sys.stdout
    if req.from_int8 is not None:
        return _from_int8(req, out)
    if req.build_options.precision != "int8":
        return _float_engine(req, out)
    return _int8(req, out)


def _float_engine(req: BuildRequest, out: Any) -> int:
    from edge.model_spec import resolve_spec

    assert req.model is not None
    spec = resolve_spec(req.model, req.model_settings)
    return _engine_or_stop(req, req.model, spec, calib_sha=None, quantization=None, out=out)


def _from_int8(req: BuildRequest, out: Any) -> int:
    import onnx

    from calibration.graph_stats import precision_stats
    from calibration.qdq_check import require_valid_qdq
    from calibration.quantize import read_gate, read_provenance
    from edge.model_spec import resolve_spec

    assert req.from_int8 is not None
    onnx_path = req.from_int8
    spec = resolve_spec(onnx_path, req.model_settings)
    m = onnx.load(str(onnx_path))
    check = require_valid_qdq(m, str(onnx_path))
    stats = precision_stats(m, spec.input_size)
    prov = read_provenance(m)
    gate = read_gate(m)
    print(f"Q/DQ model {onnx_path}: graph check OK ({check.dequantize_nodes} DQ); "
          f"{100 * stats.int8_mac_share:.1f} % of MACs INT8; float layers: {list(stats.float_layers) or 'none'}",
          file=out)
    if gate is None:
        print("accuracy gate: no edgeqc.gate record in the model (not gated by `edgeqc build`)", file=out)
    elif gate["passed"]:
        print("accuracy gate: PASSED (edgeqc.gate)", file=out)
    elif not req.force:
        why = gate.get("error") or "; ".join(
            f"{k}: top-1 drop {g.get('top1_drop_pp')} pp, escape rise {g.get('escape_rise_pp')} pp"
            for k, g in (gate.get("gates") or {}).items())
        print(f"\nREFUSED: {onnx_path} was refused by the accuracy gate ({why}; thresholds "
              f"{gate.get('thresholds')}). No engine built. Fix the model (e.g. --accuracy-aware) or, knowingly, "
              "pass --force to build it anyway.", file=out)
        print(f"exit code {EXIT_GATE_REFUSED}: accuracy gate refused", file=out)
        return EXIT_GATE_REFUSED
    else:
        print("WARNING: the accuracy gate REFUSED this model; building anyway (--force)", file=out)
    quant = {"provenance": prov, "precision": stats.to_dict(), "gate": gate}
    return _engine_or_stop(req, onnx_path, spec, calib_sha=prov.get("calib_sha256"), quantization=quant, out=out)


def _int8(req: BuildRequest, out: Any) -> int:
    from calibration.accuracy_aware import load_labelled, quantize_and_gate
    from calibration.cache import RangeCache, write_json_atomic
    from calibration.calibrate import calibration_report, prepare_ranges, quantize_with_modelopt
    from calibration.gate import GateThresholds
    from calibration.quantize import stamp_gate
    from calibration.search import Trial
    from edge.model_spec import resolve_spec
    from edge.onnx_info import file_sha256

    assert req.model is not None
    if req.calib is None or req.val is None:
        raise ValueError("an INT8 build needs --calib DIR (calibration images) and --val DIR (labelled folder "
                         "for the accuracy gate)")
    spec = resolve_spec(req.model, req.model_settings)
    thresholds = req.thresholds or GateThresholds()
    req.out_dir.mkdir(parents=True, exist_ok=True)
    int8_path = req.out_dir / (req.model.name.removesuffix(".onnx") + ".int8.onnx")
    print(f"model {req.model}: {spec.describe()}", file=out)

    val = load_labelled(req.val, spec, req.pass_labels, progress=req.progress)
    ranges = None
    try:
        if req.method.startswith("modelopt-"):
            if req.accuracy_aware:
                raise ValueError("--accuracy-aware re-quantizes once per candidate layer and uses ONNX Runtime's "
                                 "quantizer; use --method minmax/entropy/percentile with it")
            ranges, _ = quantize_with_modelopt(req.model, req.calib, int8_path, spec, req.method,
                                               max_images=req.calib_settings.max_images,
                                               min_images=req.min_images, exclude=req.exclude, progress=req.progress)
        else:
            ranges = prepare_ranges(req.model, req.calib, spec, req.calib_settings, min_images=req.min_images,
                                    cache=RangeCache(req.cache_dir), progress=req.progress,
                                    keep_data=req.accuracy_aware)
        print(f"calibration: {len(ranges.used)} images used, {len(ranges.skipped)} unreadable skipped (of "
              f"{ranges.found}), method {ranges.method}, "
              + ("ranges from cache" if ranges.cache_hit else f"{ranges.seconds:.1f} s"), file=out)

        def on_trial(t: Trial) -> None:
            d = t.score.detail
            print(f"  try float {t.node}: selection top-1 {d.get('top1_int8')} %, escapes {d.get('escapes_int8')}, "
                  f"false rejects {d.get('false_rejects_int8')} -> {'kept' if t.accepted else 'reverted'}", file=out)

        if req.method.startswith("modelopt-"):
            gated = _gate_existing(int8_path, req, spec, val, thresholds)
        else:
            gated = quantize_and_gate(req.model, ranges, spec, val, int8_path, thresholds=thresholds,
                                      accuracy_aware=req.accuracy_aware, options=req.search, exclude=req.exclude,
                                      threads=req.threads, provenance={"gate_thresholds": vars(thresholds)},
                                      on_trial=on_trial)
    finally:
        val.close()
        if ranges is not None:
            ranges.close()  # drops the preprocessed calibration images; the numbers stay
    print(file=out)
    print(gated.evaluation.format_table(), file=out)
    print(file=out)
    if gated.search is not None:
        print("accuracy-aware search (ranking: local per-layer output SQNR on calibration images, worst first):",
              file=out)
        for r in gated.ranking[:8]:
            print(f"  {r.sqnr_db:6.1f} dB  {r.name} ({r.op_type})", file=out)
        print(f"  stopped: {gated.search.stopped}; {len(gated.search.trials)} candidate(s) tried", file=out)
        for g in gated.plain_gates.values():
            print(f"  before: {g.message()}", file=out)
    st = gated.qdq.stats
    print(f"layers kept in float: {list(gated.qdq.excluded) or 'none'}; compute layers INT8: "
          f"{len(st.layers) - len(st.float_layers)}/{len(st.layers)}; INT8 share of MACs: "
          f"{100 * st.int8_mac_share:.2f} % ({st.int8_macs / 1e6:.1f} of {st.total_macs / 1e6:.1f} M per image)",
          file=out)
    for g in gated.gates.values():
        print(f"gate {g.message()}", file=out)

    # the outcome goes into the model; a refused model never keeps the accepted name
    final = int8_path if gated.passed else refused_name(int8_path)
    stamp_gate(int8_path, final, gate_record(gated, thresholds))
    if gated.passed:
        refused_name(int8_path).unlink(missing_ok=True)  # a refused model of an earlier build
    gated.qdq = replace(gated.qdq, path=final, sha256=file_sha256(final))
    for mr in gated.evaluation.models:
        if mr.path == int8_path:
            mr.path = final
    report = calibration_report(req.model, ranges, gated.qdq, spec, min_images=req.min_images,
                                extra={"gate": gated.summary(), "evaluation": gated.evaluation.to_dict()})
    report_path = int8_path.with_name(int8_path.name.removesuffix(".onnx") + ".report.json")
    write_json_atomic(report_path, report)
    if req.json_out:
        from calibration.evaluate import write_json

        write_json(report, req.json_out)
    print(f"Q/DQ model {gated.qdq.path}; report {report_path}", file=out)
    if not gated.passed:
        hint = ("" if req.accuracy_aware else
                "\nTry --accuracy-aware: it keeps the costliest layers in float until the gate passes.")
        limit = (" even with the float layer limit (--max-float-layers); numbers above are the best attempt"
                 if req.accuracy_aware else "")
        print(f"\nREFUSED: the INT8 model misses the accuracy gate{limit} (max top-1 drop "
              f"{thresholds.max_top1_drop} pp, max escape rise {thresholds.max_escape_rise} pp). No engine built; "
              f"the refused model is kept as {final} (not {int8_path.name}; its edgeqc.gate metadata says "
              f"refused).{hint}", file=out)
        print(f"exit code {EXIT_GATE_REFUSED}: accuracy gate refused", file=out)
        return EXIT_GATE_REFUSED
    return _engine_or_stop(req, gated.qdq.path, spec, calib_sha=ranges.calib_sha256,
                           quantization=gated.summary(), out=out)


def _gate_existing(int8_path: Path, req: BuildRequest, spec: Any, val: Any, thresholds: Any) -> Any:
    """Gate an already written Q/DQ model (the ModelOpt path) on the whole labelled folder."""
    import onnx

    from calibration.accuracy_aware import GatedModel, gate_on, make_evaluation
    from calibration.calibrate import QdqModel
    from calibration.evaluate import OrtClassifier
    from calibration.graph_stats import precision_stats
    from calibration.qdq_check import require_valid_qdq
    from edge.onnx_info import file_sha256

    assert req.model is not None
    fp32_pred = OrtClassifier(req.model, spec, threads=req.threads).predict_all(val.x)
    pred = OrtClassifier(int8_path, spec, threads=req.threads).predict_all(val.x)
    g = {"val": gate_on("val", None, val, fp32_pred, pred, thresholds)}
    m = onnx.load(str(int8_path))
    qdq = QdqModel(int8_path, file_sha256(int8_path), tuple(req.exclude), require_valid_qdq(m, str(int8_path)),
                   precision_stats(m, spec.input_size), 0.0)
    return GatedModel(qdq, g["val"].passed, g, g, make_evaluation(val, fp32_pred, pred, req.model, int8_path))
