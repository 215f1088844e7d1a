"""Write a Q/DQ (explicitly quantized) ONNX model from FP32 + cached activation ranges.

Uses ONNX Runtime's ``quantize_static`` with the settings facts.md §4 measured to give a
TensorRT-valid graph: ``QuantFormat.QDQ``, per-channel int8 weights, int8 activations,
``ActivationSymmetric`` / ``WeightSymmetric`` (zero points 0), ``QuantizeBias=False`` (biases stay
float). Ranges come from :mod:`calibration.ranges` through ORT's ``calibration_cache_path``, so
no calibration inference runs here; layers named in ``exclude`` are left in float with ORT's own
``nodes_to_exclude`` (no hand-edited graph). The model spec (labels, preprocessing) is written
into ``metadata_props`` (:func:`edge.model_spec.spec_to_metadata`) together with
``edgeqc.quantization`` (JSON provenance: method, hashes, excluded layers). ``edgeqc build``
adds ``edgeqc.gate`` (JSON: ``passed``, thresholds, gate numbers per image set) with
:func:`stamp_gate`, so the model itself says whether the accuracy gate accepted it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from calibration.cache import file_mode
from calibration.ranges import ort_method, quiet_ort_quantization
from edge.model_spec import ModelSpec, spec_to_metadata

PROVENANCE_KEY = "edgeqc.quantization"
GATE_KEY = "edgeqc.gate"


def quantize_qdq(
    model_path: str | Path,
    ranges_path: str | Path,
    out_path: str | Path,
    *,
    method: str,
    spec: ModelSpec,
    exclude: Sequence[str] = (),
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Quantize ``model_path`` with the ranges in ``ranges_path``; write ``out_path`` atomically.

    Args:
        model_path: FP32 ONNX model.
        ranges_path: ORT calibration cache JSON from :func:`calibration.ranges.compute_ranges`.
        out_path: where the Q/DQ model goes (replaced only once it is complete).
        method: the calibration method the ranges were made with (ORT checks it).
        spec: the model spec written into the metadata.
        exclude: node names kept in float.
        provenance: JSON-able dict stored as ``edgeqc.quantization``.

    Raises:
        ValueError: a name in ``exclude`` is not a node of the model.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    out = Path(out_path)
    if exclude:
        names = {n.name for n in onnx.load(str(model_path), load_external_data=False).graph.node}
        unknown = [e for e in exclude if e not in names]
        if unknown:
            raise ValueError(f"cannot exclude {unknown} from quantization: no such node in {model_path}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgeqc-q-", dir=out.parent) as tmp:
        raw = Path(tmp) / "q.onnx"
        with quiet_ort_quantization():
            quantize_static(
                str(model_path), str(raw), None,
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                nodes_to_exclude=list(exclude), calibrate_method=ort_method(method),
                calibration_cache_path=str(ranges_path),
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
            )
        stamp_metadata(raw, out, spec, provenance)
    return out


def stamp_metadata(src: str | Path, dst: str | Path, spec: ModelSpec,
                   provenance: Mapping[str, Any] | None = None) -> Path:
    """Copy the ONNX model ``src`` to ``dst`` (atomically) with the model spec and the
    ``edgeqc.quantization`` provenance added to its ``metadata_props``."""
    import onnx

    dst = Path(dst)
    model = onnx.load(str(src))
    meta = {m.key: m.value for m in model.metadata_props}
    meta.update(spec_to_metadata(spec))
    if provenance is not None:
        meta[PROVENANCE_KEY] = json.dumps(dict(provenance), sort_keys=True)
    _set_metadata(model, meta)
    return _save_atomic(model, dst)


def stamp_gate(src: str | Path, dst: str | Path, gate: Mapping[str, Any]) -> Path:
    """Write the Q/DQ model ``src`` to ``dst`` (atomically) with the accuracy gate outcome
    ``gate`` (JSON-able, with a bool ``passed``) as ``edgeqc.gate`` in its metadata; ``src`` is
    removed when it is another file (a refused model moves to its refused name).

    Raises:
        TypeError: ``gate`` has no bool ``passed``.
    """
    import onnx

    if not isinstance(gate.get("passed"), bool):
        raise TypeError(f"gate record passed = {gate.get('passed')!r}: expected true or false")
    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    meta = {m.key: m.value for m in model.metadata_props}
    meta[GATE_KEY] = json.dumps(dict(gate), sort_keys=True)
    _set_metadata(model, meta)
    _save_atomic(model, dst)
    if src.resolve() != dst.resolve():
        src.unlink()
    return dst


def read_gate(model: Any) -> dict[str, Any] | None:
    """The ``edgeqc.gate`` dict of a loaded ONNX model; None when absent (a model not gated by
    ``edgeqc build``). An unreadable record counts as refused: ``{"passed": False, "error": ...}``."""
    for m in model.metadata_props:
        if m.key == GATE_KEY:
            try:
                v = json.loads(m.value)
            except json.JSONDecodeError as exc:
                return {"passed": False, "error": f"metadata {GATE_KEY} is not JSON ({exc})"}
            if not isinstance(v, dict) or not isinstance(v.get("passed"), bool):
                return {"passed": False, "error": f"metadata {GATE_KEY} = {m.value!r}: expected a JSON object "
                                                  "with a bool 'passed'"}
            return v
    return None


def _set_metadata(model: Any, meta: Mapping[str, str]) -> None:
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def _save_atomic(model: Any, dst: Path) -> Path:
    import onnx

    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dst


def read_provenance(model: Any) -> dict[str, Any]:
    """The ``edgeqc.quantization`` dict of a loaded ONNX model (empty when absent or not JSON)."""
    for m in model.metadata_props:
        if m.key == PROVENANCE_KEY:
            try:
                v = json.loads(m.value)
            except json.JSONDecodeError:
                return {}
            return v if isinstance(v, dict) else {}
    return {}


def activation_scales(model: Any) -> dict[str, float]:
    """Per-tensor activation scales of a Q/DQ model: ``{tensor name: scale}`` for every
    QuantizeLinear whose input is not an initializer (weights are per channel; not listed)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    out: dict[str, float] = {}
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in inits:
            continue
        s = inits.get(n.input[1])
        if s is None:
            continue
        arr = numpy_helper.to_array(s)
        if arr.size == 1:
            out[n.input[0]] = float(arr.reshape(-1)[0])
    return out
