"""Cheap per-layer ranking for the accuracy-aware search: local output SQNR of each quantized layer.

For every quantized layer of the Q/DQ model, the layer is cut out together with its own
QuantizeLinear/DequantizeLinear nodes (``onnx.utils.Extractor``) and fed the *FP32* model's
values of its inputs on a few calibration batches; its output is compared with the FP32
model's output of the same layer:

    SQNR_dB = 10 * log10( sum(y_fp32^2) / sum((y_fp32 - y_local_int8)^2) )

This isolates what quantizing *this* layer (its input activations and weights) costs. The
accumulated SQNR along the INT8 network is not used: it only falls with depth and blames late
layers for noise injected early. The final Q/DQ on a graph output (ONNX Runtime quantizes the
logits) is counted with the layer that produces it. Lowest SQNR = most costly = first candidate.
The ranking is only a proxy; :mod:`calibration.search` confirms each step on the task metric.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

# Ops that only move or clamp values: ORT gives their input and output the same scale, so
# excluding one of them changes a neighbour's scale rather than removing a quantization
# (measured: excluding every Clip of mt-effnet-lite0 drops INT8 top-1 from 89.6 % to 68.3 %).
PASS_THROUGH_OPS = frozenset({
    "Clip", "Relu", "LeakyRelu", "MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze",
    "Resize", "Split", "Gather", "Slice", "Pad", "Identity", "Concat", "GlobalAveragePool", "AveragePool",
})
_Q_SUFFIX = "_QuantizeLinear_Input"


@dataclass(frozen=True)
class LayerSensitivity:
    """One quantized layer: ``name``, ``op_type``, local output ``sqnr_db`` and ``cosine``
    similarity to FP32 (over all calibration images used)."""

    name: str
    op_type: str
    sqnr_db: float
    cosine: float

    def to_dict(self) -> dict[str, object]:
        return {"node": self.name, "op_type": self.op_type, "sqnr_db": round(self.sqnr_db, 3),
                "cosine": round(self.cosine, 6)}


@dataclass(frozen=True)
class _Probe:
    name: str
    op_type: str
    sources: tuple[str, ...]  # float tensors in the Q/DQ graph feeding the cut-out layer
    target: str  # tensor of the cut-out layer compared with FP32
    fp32_sources: tuple[str, ...]
    fp32_target: str


def _fp32_name(t: str) -> str:
    return t.removesuffix(_Q_SUFFIX)


def _probes(qdq: onnx.ModelProto, fp32_tensors: set[str], exclude_ops: Iterable[str]) -> list[_Probe]:
    g = qdq.graph
    inits = {t.name for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    skip = set(exclude_ops) | {"QuantizeLinear", "DequantizeLinear", "Constant"}
    probes: list[_Probe] = []
    for n in g.node:
        if n.op_type in skip or not n.name:
            continue
        sources: list[str] = []
        quantized = False
        for i in n.input:
            if not i or i in inits:
                continue
            p = producer.get(i)
            if p is not None and p.op_type == "Constant":
                continue
            if p is not None and p.op_type == "DequantizeLinear":
                q = producer.get(p.input[0])
                if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in inits:
                    quantized = True
                    sources.append(q.input[0])
                continue  # weight DQ: part of the cut-out layer
            sources.append(i)
        if not quantized or not n.output:
            continue
        target = n.output[0]
        cons = consumers.get(target, [])
        if len(cons) == 1 and cons[0].op_type == "QuantizeLinear":
            dq = consumers.get(cons[0].output[0], [])
            if len(dq) == 1 and dq[0].op_type == "DequantizeLinear" and dq[0].output[0] in outputs:
                target = dq[0].output[0]  # graph output: its Q/DQ belongs to this layer
        fs = tuple(_fp32_name(s) for s in sources)
        ft = _fp32_name(target)
        if all(s in fp32_tensors for s in fs) and ft in fp32_tensors:
            probes.append(_Probe(n.name, n.op_type, tuple(dict.fromkeys(sources)), target,
                                 tuple(dict.fromkeys(fs)), ft))
    return probes


def rank_layers(
    fp32_path: str | Path,
    qdq_path: str | Path,
    batches: Sequence[np.ndarray],
    *,
    input_name: str,
    exclude_ops: Iterable[str] = PASS_THROUGH_OPS,
    threads: int = 0,
) -> list[LayerSensitivity]:
    """Rank the quantized layers of ``qdq_path`` by local output SQNR (worst first).

    Args:
        fp32_path / qdq_path: the FP32 model and its Q/DQ version (same tensor names, as
            ONNX Runtime's quantizer keeps them).
        batches: calibration inputs, each ``[b,3,H,W] float32``.
        input_name: the model input tensor name.
        exclude_ops: op types never ranked (default: ops that only move or clamp values).
        threads: ONNX Runtime intra-op threads (0 = default).

    Returns:
        One :class:`LayerSensitivity` per quantized layer, lowest SQNR first.
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper
    from onnx.utils import Extractor

    fp32 = onnx.load(str(fp32_path))
    qdq = onnx.load(str(qdq_path))
    fp32_tensors = {o for n in fp32.graph.node for o in n.output} | {i.name for i in fp32.graph.input}
    probes = _probes(qdq, fp32_tensors, exclude_ops)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    providers = ["CPUExecutionProvider"]

    needed = sorted({t for p in probes for t in (*p.fp32_sources, p.fp32_target)} - {input_name})
    existing = {o.name for o in fp32.graph.output}
    for t in needed:
        if t not in existing:
            fp32.graph.output.append(helper.make_empty_tensor_value_info(t))
    full = ort.InferenceSession(fp32.SerializeToString(), opts, providers=providers)
    out_names = [o.name for o in full.get_outputs()]

    extractor = Extractor(qdq)
    probe_opts = ort.SessionOptions()
    probe_opts.intra_op_num_threads = threads
    probe_opts.log_severity_level = 3
    probe_opts.enable_cpu_mem_arena = False  # one arena per probe session would add up (~60 sessions)
    sessions = []
    for p in probes:
        sub = extractor.extract_model(list(p.sources), [p.target])
        sessions.append(ort.InferenceSession(sub.SerializeToString(), probe_opts, providers=providers))

    sig = np.zeros(len(probes))
    noise = np.zeros(len(probes))
    dot = np.zeros(len(probes))
    nq = np.zeros(len(probes))
    for x in batches:
        values = dict(zip(out_names, full.run(None, {input_name: x})))
        values[input_name] = x
        for k, (p, s) in enumerate(zip(probes, sessions)):
            feed = {src: values[fsrc] for src, fsrc in zip(p.sources, p.fp32_sources)}
            y = s.run(None, feed)[0].astype(np.float64)
            ref = values[p.fp32_target].astype(np.float64)
            sig[k] += float(np.sum(ref * ref))
            noise[k] += float(np.sum((ref - y) ** 2))
            dot[k] += float(np.sum(ref * y))
            nq[k] += float(np.sum(y * y))
    out: list[LayerSensitivity] = []
    for k, p in enumerate(probes):
        sqnr = 10.0 * np.log10(sig[k] / noise[k]) if noise[k] > 0 else float("inf")
        cos = dot[k] / np.sqrt(sig[k] * nq[k]) if sig[k] > 0 and nq[k] > 0 else 1.0
        out.append(LayerSensitivity(p.name, p.op_type, float(sqnr), float(cos)))
    out.sort(key=lambda s: (s.sqnr_db, s.name))
    return out
