"""``edgeqc info FILE``: what an engine, a sidecar or an ONNX model holds.

- ONNX: inputs/outputs, opset, precision, the resolved model spec (when it resolves), the
  ``edgeqc.quantization`` record, Q/DQ graph check and INT8 share of MACs for Q/DQ models, sha256.
- Engine (``.engine``/``.plan``/``.trt``): its sidecar, the plan hash check, and whether it can run
  here — :func:`edge.backends.tensorrt.check_engine_file`, the runtime's own check (TensorRT
  version when ``tensorrt`` imports, compute capability when pycuda and a GPU are present).
- Sidecar (``.json``): the same, for the engine it describes. A sidecar field of the wrong type
  (e.g. ``"compute_capability": "x"``) is reported by name, value and expectation
  (:func:`sidecar_field_problems`) and the engine counts as not runnable here.

Nothing is deserialized or run. ``edgeqc info`` exits :data:`EXIT_NOT_RUNNABLE` (3) when it prints
``runs here: NO`` (see docs/build.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.model_spec import ENGINE_SUFFIXES

EXIT_NOT_RUNNABLE = 3
_TEXT_FIELDS = ("trt_version", "device_name", "precision", "plan_sha256")


def _bad(field: str, value: Any, expected: str) -> str:
    return f"sidecar field {field} = {value!r}: expected {expected}"


def sidecar_field_problems(s: dict[str, Any]) -> list[str]:
    """Every sidecar field :func:`format_info` shows that has the wrong type or shape, as
    ``sidecar field NAME = VALUE: expected ...`` (empty list = well-formed)."""
    out: list[str] = []
    cc = s.get("compute_capability")
    if not (isinstance(cc, list) and len(cc) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in cc)):
        out.append(_bad("compute_capability", cc, "[major, minor], two integers, e.g. [8, 7]"))
    for k in _TEXT_FIELDS:
        if k in s and not isinstance(s[k], str):
            out.append(_bad(k, s[k], "a string"))
    for k in ("inputs", "outputs"):
        v = s.get(k, [])
        if not (isinstance(v, list) and all(isinstance(t, dict) for t in v)):
            out.append(_bad(k, v, "a list of {name, shape, dtype} objects"))
    b = s.get("build", {})
    if not isinstance(b, dict):
        return [*out, _bad("build", b, "an object")]
    prof = b.get("profile") or []
    if not (isinstance(prof, list) and all(isinstance(p, dict) and {"name", "min", "opt", "max"} <= p.keys()
                                           for p in prof)):
        out.append(_bad("build.profile", prof, "a list of {name, min, opt, max} objects"))
    q = b.get("quantization") or {}
    if not isinstance(q, dict):
        return [*out, _bad("build.quantization", q, "an object")]
    prec = q.get("precision") or {}
    if not isinstance(prec, dict):
        out.append(_bad("build.quantization.precision", prec, "an object"))
    elif not isinstance(prec.get("int8_mac_share", 0), (int, float)):
        out.append(_bad("build.quantization.precision.int8_mac_share", prec["int8_mac_share"], "a number 0..1"))
    return out


def onnx_info(path: Path) -> dict[str, Any]:
    """Facts about an ONNX file (see module docstring)."""
    import onnx

    from calibration.graph_stats import precision_stats
    from calibration.qdq_check import check_qdq_model
    from calibration.quantize import read_gate, read_provenance
    from edge.model_spec import ModelSpecError, resolve_spec, spec_to_dict
    from edge.onnx_info import file_sha256, read_onnx_info

    info = read_onnx_info(path)
    out: dict[str, Any] = {
        "kind": "onnx", "path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path),
        "opset": info.opset, "precision": info.precision,
        "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in info.inputs],
        "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in info.outputs],
        "metadata_keys": sorted(info.metadata),
    }
    try:
        spec = resolve_spec(path)
        out["model_spec"] = spec_to_dict(spec)
        hw: tuple[int, int] | None = spec.input_size
    except (ModelSpecError, ValueError) as exc:
        out["model_spec_error"] = str(exc)
        hw = None
    m = onnx.load(str(path))
    stats = precision_stats(m, hw)
    out["compute"] = stats.to_dict()
    if info.precision == "int8":
        chk = check_qdq_model(m)
        out["qdq_check"] = {"ok": chk.ok, "quantize_nodes": chk.quantize_nodes,
                            "dequantize_nodes": chk.dequantize_nodes, "weights_checked": chk.weights_checked,
                            "violations": [str(v) for v in chk.violations]}
        prov = read_provenance(m)
        if prov:
            out["quantization"] = prov
        out["gate"] = read_gate(m)
    return out


def engine_info(engine: Path) -> dict[str, Any]:
    """Sidecar contents + compatibility with this machine for an engine file."""
    from edge.backends.engine_sidecar import EngineCompatError, read_sidecar, sidecar_path
    from edge.backends.tensorrt import check_engine_file

    out: dict[str, Any] = {"kind": "engine", "path": str(engine), "sidecar_path": str(sidecar_path(engine))}
    if engine.is_file():
        out["bytes"] = engine.stat().st_size
    try:
        out["sidecar"] = read_sidecar(engine)
    except EngineCompatError as exc:
        out["sidecar_error"] = str(exc)
        out["compatible_here"] = False
        return out
    bad = sidecar_field_problems(out["sidecar"])
    if bad:
        out["sidecar_error"] = (f"engine {engine}: sidecar {out['sidecar_path']} is malformed: " + "; ".join(bad)
                                + ". Rebuild the engine with `edgeqc build` (it writes the sidecar).")
        out["compatible_here"] = False
        return out
    if not engine.is_file():
        out["compatible_here"] = None
        out["problems"] = [f"engine file {engine} is missing"]
        return out
    problems = check_engine_file(engine)
    out["problems"] = problems
    out["compatible_here"] = not problems
    try:
        import tensorrt

        out["tensorrt_here"] = str(tensorrt.__version__)
    except ImportError:
        out["tensorrt_here"] = None
    return out


def describe(path: str | Path) -> dict[str, Any]:
    """Dispatch on the file kind.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not an ONNX model, engine or sidecar.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file: {p}")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return onnx_info(p)
    if suffix in ENGINE_SUFFIXES:
        return engine_info(p)
    if suffix == ".json":
        engine = p.with_name(p.name.removesuffix(".json"))
        if engine.suffix.lower() not in ENGINE_SUFFIXES:
            raise ValueError(f"{p}: a sidecar is named <engine>.json (model.engine.json); cannot tell the engine")
        return engine_info(engine) | {"kind": "sidecar"}
    raise ValueError(f"{p}: unknown file kind {suffix!r}; expected .onnx, .engine/.plan/.trt or <engine>.json")


def not_runnable(d: dict[str, Any]) -> bool:
    """True when :func:`format_info` says ``runs here: NO`` for :func:`describe`'s dict (an engine
    or sidecar with a missing/malformed sidecar, a missing plan, or a compatibility problem)."""
    return d["kind"] != "onnx" and ("sidecar_error" in d or (d.get("compatible_here") is not True
                                                              and bool(d.get("problems"))))


def _gate_line(gate: dict[str, Any] | None) -> str:
    if gate is None:
        return "accuracy gate: unknown (no edgeqc.gate metadata: not gated by `edgeqc build`)"
    if "error" in gate:
        return f"accuracy gate: REFUSED ({gate['error']})"
    parts = "; ".join(f"{k} {g.get('images')} images: top-1 drop {g.get('top1_drop_pp')} pp, escape rise "
                      f"{g.get('escape_rise_pp')} pp" for k, g in (gate.get("gates") or {}).items()
                      if isinstance(g, dict))
    t = gate.get("thresholds") or {}
    verdict = "PASSED" if gate["passed"] else "REFUSED (`edgeqc build --from-int8` refuses it without --force)"
    return (f"accuracy gate: {verdict} ({parts}; allowed top-1 drop {t.get('max_top1_drop')} pp, escape rise "
            f"{t.get('max_escape_rise')} pp)")


def format_info(d: dict[str, Any]) -> str:
    """Human-readable lines for :func:`describe`'s dict."""
    lines: list[str] = []
    if d["kind"] == "onnx":
        lines.append(f"ONNX model {d['path']} ({d['bytes'] / 1e6:.2f} MB, opset {d['opset']}, {d['precision']}), "
                     f"sha256 {d['sha256']}")
        for k in ("inputs", "outputs"):
            for t in d[k]:
                lines.append(f"  {k[:-1]:6} {t['name']!r} {t['shape']} {t['dtype']}")
        if "model_spec" in d:
            ms = d["model_spec"]
            lines.append(f"  model spec: labels {ms['labels']}, input {ms['input_size']}, {ms['resize']}/"
                         f"{ms['interpolation']}, {ms['channel_order']}, scale {ms['scale']:.6g}, mean {ms['mean']}, "
                         f"std {ms['std']}, output {ms['output']}")
        else:
            lines.append(f"  model spec: not resolvable from the file alone ({d.get('model_spec_error')})")
        c = d["compute"]
        lines.append(f"  compute layers: {c['compute_layers']}, {c['total_macs'] / 1e6:.1f} M MACs per image; INT8: "
                     f"{c['int8_layers']} layers, {100 * c['int8_mac_share']:.2f} % of MACs")
        if c["float_layers"] and d["precision"] == "int8":
            lines.append(f"  layers in float: {c['float_layers']}")
        if "qdq_check" in d:
            q = d["qdq_check"]
            lines.append(f"  Q/DQ check: {'OK' if q['ok'] else 'FAILED'} ({q['quantize_nodes']} Q, "
                         f"{q['dequantize_nodes']} DQ, {q['weights_checked']} weights)")
            lines.extend(f"    {v}" for v in q["violations"])
        if "quantization" in d:
            q = d["quantization"]
            lines.append(f"  quantization: {q.get('tool')} method {q.get('method')}, {q.get('calib_images')} "
                         f"calibration images (set sha256 {str(q.get('calib_sha256'))[:16]}…), accuracy-aware "
                         f"{bool(q.get('accuracy_aware'))}, excluded {q.get('excluded')} (--json for everything)")
        if d.get("precision") == "int8":
            lines.append("  " + _gate_line(d.get("gate")))
        return "\n".join(lines)
    lines.append(f"TensorRT engine {d['path']}" + (f" ({d['bytes'] / 1e6:.2f} MB)" if "bytes" in d else ""))
    lines.append(f"  sidecar {d['sidecar_path']}")
    if "sidecar_error" in d:
        lines.append(f"  {d['sidecar_error']}")
        lines.append("  runs here: NO (the runtime refuses an engine without a readable, well-formed sidecar)")
        return "\n".join(lines)
    s = d["sidecar"]
    cc = s["compute_capability"]
    lines.append(f"  built with TensorRT {s.get('trt_version')} on {s.get('device_name')} (compute capability "
                 f"{cc[0]}.{cc[1]}), precision {s.get('precision')}")
    for k in ("inputs", "outputs"):
        for t in s.get(k, []):
            lines.append(f"  {k[:-1]:6} {t.get('name')!r} {t.get('shape')} {t.get('dtype')}")
    b = s.get("build", {})
    prof = b.get("profile") or []
    if prof:
        lines.append("  optimization profile: " + "; ".join(f"{p['name']} min {p['min']} opt {p['opt']} max {p['max']}"
                                                         for p in prof))
    q = b.get("quantization") or {}
    prec = q.get("precision") or {}
    if prec:
        lines.append(f"  INT8 share of MACs {100 * prec.get('int8_mac_share', 0):.2f} %; layers in float: "
                     f"{prec.get('float_layers')}")
    lines.append(f"  onnx sha256 {s.get('onnx_sha256')}, calib sha256 {s.get('calib_sha256')}, plan sha256 "
                 f"{s.get('plan_sha256')}")
    if d.get("compatible_here") is True:
        lines.append("  runs here: yes (sidecar matches this device"
                     + ("" if d.get("tensorrt_here") else "; TensorRT not installed here, version not checked") + ")")
    elif d.get("problems"):
        lines.append("  runs here: NO")
        lines.extend(f"    {p}" for p in d["problems"])
    return "\n".join(lines)
