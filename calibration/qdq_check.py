"""Checks that a Q/DQ (explicitly quantized) ONNX graph is one TensorRT builds as INT8.

Rules (TensorRT "Working with Quantized Types" / "Explicit Quantization"; issue 3):

- every QuantizeLinear / DequantizeLinear has a zero point, int8, all values 0 (symmetric);
- every weight that feeds a Conv / ConvTranspose / Gemm / MatMul through a DequantizeLinear is
  int8 and quantized per channel on the output-channel axis (axis 0 for Conv and for Gemm with
  ``transB=1``), one scale per output channel. The int8 weight may be stored as an int8
  initializer behind the DequantizeLinear (ONNX Runtime) or as a float initializer behind a
  QuantizeLinear -> DequantizeLinear pair (NVIDIA ModelOpt); both are accepted;
- no DequantizeLinear of an int32 tensor (a quantized bias: TensorRT wants float biases).

:func:`check_qdq_model` returns the violations; :func:`require_valid_qdq` raises
:class:`QdqGraphError` naming each offending node.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
_INT8 = 3  # onnx.TensorProto.INT8
_INT32 = 6  # onnx.TensorProto.INT32


class QdqGraphError(ValueError):
    """The Q/DQ graph breaks a TensorRT rule; the message names every offending node."""


@dataclass(frozen=True)
class Violation:
    """One broken rule: the ``node`` (name, or ``<op #index>`` when unnamed) and what is wrong."""

    node: str
    problem: str

    def __str__(self) -> str:
        return f"{self.node}: {self.problem}"


@dataclass(frozen=True)
class QdqSummary:
    """What the check saw: Q/DQ node counts, weights checked, and the violations."""

    quantize_nodes: int
    dequantize_nodes: int
    weights_checked: int
    violations: tuple[Violation, ...]

    @property
    def ok(self) -> bool:
        return not self.violations and self.dequantize_nodes > 0


def _node_name(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"<{node.op_type} #{index}>"


def _output_channel_axis(consumer: onnx.NodeProto, rank: int) -> int:
    """The weight axis that indexes output channels for ``consumer``'s weight input (index 1)."""
    if consumer.op_type == "Gemm":
        trans_b = next((a.i for a in consumer.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if consumer.op_type == "MatMul":
        return rank - 1
    if consumer.op_type == "ConvTranspose":
        return 1
    return 0


def check_qdq_model(model: onnx.ModelProto) -> QdqSummary:
    """Check ``model`` against the rules in the module docstring (graph only, nothing is run).

    Returns:
        :class:`QdqSummary`; ``summary.ok`` is False when a rule is broken or the graph has no
        DequantizeLinear at all (then it is not a quantized model).
    """
    from onnx import numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    const_nodes = {n.output[0]: n for n in g.node if n.op_type == "Constant" and n.output}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    names = {id(n): _node_name(n, i) for i, n in enumerate(g.node)}
    violations: list[Violation] = []

    def const_array(name: str) -> np.ndarray | None:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        c = const_nodes.get(name)
        if c is not None:
            for a in c.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def elem_type(name: str) -> int | None:
        if name in inits:
            return inits[name].data_type
        c = const_nodes.get(name)
        if c is not None:
            for a in c.attribute:
                if a.name == "value":
                    return a.t.data_type
        return None

    n_q = n_dq = 0
    for node in g.node:
        if node.op_type not in QDQ_OPS:
            continue
        nm = names[id(node)]
        if node.op_type == "QuantizeLinear":
            n_q += 1
        else:
            n_dq += 1
        if len(node.input) < 3 or not node.input[2]:
            violations.append(Violation(nm, "no zero point input (defaults to uint8; TensorRT needs int8 zero point 0)"))
        else:
            zp = const_array(node.input[2])
            zt = elem_type(node.input[2])
            if zp is None:
                violations.append(Violation(nm, f"zero point {node.input[2]!r} is not a constant"))
            else:
                if zt != _INT8:
                    violations.append(Violation(nm, f"zero point {node.input[2]!r} is {zp.dtype}, expected int8"))
                if np.any(zp != 0):
                    bad = np.flatnonzero(np.asarray(zp).reshape(-1) != 0)
                    violations.append(Violation(
                        nm, f"zero point {node.input[2]!r} is not 0 ({bad.size} of {zp.size} values non-zero, "
                            f"first {np.asarray(zp).reshape(-1)[bad[0]]}); TensorRT quantization is symmetric"))
        if node.op_type == "DequantizeLinear":
            src = node.input[0]
            if elem_type(src) == _INT32:
                violations.append(Violation(nm, f"dequantizes int32 tensor {src!r} (a quantized bias); "
                                                "keep biases float (ONNX Runtime: QuantizeBias=False)"))

    weights_checked = 0
    for node in g.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        dq = producer.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue  # float weight: this node is not quantized (excluded)
        cname = names[id(node)]
        dname = names[id(dq)]
        q_src = dq.input[0]
        q_node = producer.get(q_src)
        if q_src in inits or q_src in const_nodes:
            stored = elem_type(q_src)
            if stored != _INT8:
                violations.append(Violation(dname, f"weight of {cname} stored as onnx type {stored}, expected int8"))
            w = const_array(q_src)
            axis_node, scale_name = dq, dq.input[1]
        elif q_node is not None and q_node.op_type == "QuantizeLinear":
            w = const_array(q_node.input[0])
            if w is None:
                continue  # an activation (e.g. attention Q x K^T): per-tensor like any activation
            zt = elem_type(q_node.input[2]) if len(q_node.input) > 2 else None
            if zt != _INT8:
                violations.append(Violation(names[id(q_node)],
                                            f"weight of {cname} quantized to onnx type {zt}, expected int8"))
            axis_node, scale_name = q_node, q_node.input[1]
        elif node.op_type == "MatMul":
            continue  # second operand is an activation, not a weight
        else:
            src_desc = q_node.op_type if q_node else repr(q_src)
            violations.append(Violation(dname, f"weight of {cname} comes from {src_desc}, expected an int8 "
                                               "initializer or a QuantizeLinear of a float initializer"))
            continue
        weights_checked += 1
        scale = const_array(scale_name)
        if w is None or scale is None:
            violations.append(Violation(names[id(axis_node)], f"weight or scale of {cname} is not a constant"))
            continue
        want_axis = _output_channel_axis(node, w.ndim)
        axis = next((a.i for a in axis_node.attribute if a.name == "axis"), 1)
        if axis < 0:
            axis += w.ndim
        channels = w.shape[want_axis] if w.ndim > want_axis else 1
        if scale.size == 1 and channels > 1:
            violations.append(Violation(names[id(axis_node)], f"weight of {cname} is quantized per tensor "
                                        f"(1 scale), expected per channel: {channels} scales on axis {want_axis}"))
        elif scale.size != 1 and (axis != want_axis or scale.size != channels):
            violations.append(Violation(names[id(axis_node)], f"weight of {cname} has {scale.size} scales on axis "
                                        f"{axis}, expected {channels} on the output-channel axis {want_axis}"))
    return QdqSummary(n_q, n_dq, weights_checked, tuple(violations))


def require_valid_qdq(model: onnx.ModelProto | str | Path, source: str | None = None) -> QdqSummary:
    """Run :func:`check_qdq_model` and raise on any violation.

    Args:
        model: a loaded model or the path of an ONNX file.
        source: name used in the message (default: the path).

    Raises:
        QdqGraphError: a rule is broken (every offending node is named) or the graph has no
            DequantizeLinear (not a Q/DQ model).
    """
    import onnx

    if not isinstance(model, onnx.ModelProto):
        source = source or str(model)
        model = onnx.load(str(model))
    source = source or model.graph.name or "model"
    summary = check_qdq_model(model)
    if summary.dequantize_nodes == 0:
        raise QdqGraphError(f"{source}: no QuantizeLinear/DequantizeLinear nodes; not a Q/DQ (INT8) model")
    if summary.violations:
        lines = "\n  ".join(str(v) for v in summary.violations)
        raise QdqGraphError(f"{source}: {len(summary.violations)} Q/DQ rule violation(s) TensorRT would "
                            f"reject or mis-handle:\n  {lines}")
    return summary
