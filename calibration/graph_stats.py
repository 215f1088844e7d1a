"""Multiply-accumulates per layer, and how much of them a Q/DQ graph runs in INT8.

A layer (Conv, ConvTranspose, Gemm, MatMul) counts as INT8 when both its data input and its
weight come from a DequantizeLinear: TensorRT then runs it as an INT8 kernel. Any other layer
stays float (FP32, or FP16 if the ONNX says so) in a strongly typed TensorRT network. MACs are
counted for one image (batch 1) from ONNX shape inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass(frozen=True)
class LayerMacs:
    """One compute layer: ``name``, ``op_type``, ``macs`` (per image) and whether it is INT8."""

    name: str
    op_type: str
    macs: int
    int8: bool


@dataclass(frozen=True)
class PrecisionStats:
    """INT8 vs float split of a graph's compute layers (per image)."""

    layers: tuple[LayerMacs, ...]

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def int8_macs(self) -> int:
        return sum(layer.macs for layer in self.layers if layer.int8)

    @property
    def int8_mac_share(self) -> float:
        """Fraction (0..1) of MACs in INT8 layers; 0 for a graph without compute layers."""
        return self.int8_macs / self.total_macs if self.total_macs else 0.0

    @property
    def float_layers(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers if not layer.int8)

    def to_dict(self) -> dict[str, object]:
        return {
            "compute_layers": len(self.layers),
            "int8_layers": sum(1 for la in self.layers if la.int8),
            "float_layers": list(self.float_layers),
            "total_macs": self.total_macs,
            "int8_macs": self.int8_macs,
            "int8_mac_share": round(self.int8_mac_share, 6),
        }


def _static_copy(model: onnx.ModelProto, hw: tuple[int, int] | None) -> onnx.ModelProto:
    """Copy of ``model`` with dynamic input dims fixed (batch 1, H/W from ``hw``) and shapes inferred."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    init = {t.name for t in m.graph.initializer}
    for inp in m.graph.input:
        if inp.name in init:
            continue
        dims = inp.type.tensor_type.shape.dim
        for i, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            if i == 0:
                d.dim_value = 1
            elif i == 1 and len(dims) == 4:
                d.dim_value = 3
            elif hw is not None and len(dims) == 4 and i in (2, 3):
                d.dim_value = hw[i - 2]
    del m.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(m, data_prop=True)


def _shape(name: str, shapes: dict[str, list[int]]) -> list[int] | None:
    s = shapes.get(name)
    return s if s and all(d > 0 for d in s) else None


def precision_stats(model: onnx.ModelProto, input_hw: tuple[int, int] | None = None) -> PrecisionStats:
    """MACs per compute layer and whether it is INT8 (see module docstring).

    Args:
        model: FP32 or Q/DQ ONNX model.
        input_hw: ``(H, W)`` used when the input's height/width are dynamic.
    """
    from onnx import numpy_helper

    m = _static_copy(model, input_hw)
    g = m.graph
    shapes: dict[str, list[int]] = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    for t in g.initializer:
        shapes[t.name] = list(t.dims)
    producer = {o: n for n in g.node for o in n.output}
    for n in g.node:  # Constant nodes carry their shape in the tensor
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    shapes[n.output[0]] = list(numpy_helper.to_array(a.t).shape)

    def weight_shape(name: str) -> list[int] | None:
        p = producer.get(name)
        while p is not None and p.op_type in ("DequantizeLinear", "QuantizeLinear"):
            name = p.input[0]
            p = producer.get(name)
        return _shape(name, shapes)

    layers: list[LayerMacs] = []
    for i, n in enumerate(g.node):
        if n.op_type not in COMPUTE_OPS or len(n.input) < 2:
            continue
        out = _shape(n.output[0], shapes)
        w = weight_shape(n.input[1])
        macs = 0
        if out is not None and w is not None:
            out_elems = 1
            for d in out:
                out_elems *= d
            if n.op_type == "Conv":
                k = 1
                for d in w[1:]:
                    k *= d  # Cin/group * kH * kW
                macs = out_elems * k
            elif n.op_type == "ConvTranspose":
                x = _shape(n.input[0], shapes)
                k = 1
                for d in w[1:]:
                    k *= d
                macs = (x[0] * x[2] * x[3] if x and len(x) == 4 else 0) * w[0] * k
            elif n.op_type == "Gemm":
                trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
                kdim = w[1] if trans_b else w[0]
                macs = out_elems * kdim
            else:  # MatMul
                x = _shape(n.input[0], shapes)
                macs = out_elems * (x[-1] if x else 0)
        quantized = all(
            (p := producer.get(n.input[j])) is not None and p.op_type == "DequantizeLinear" for j in (0, 1)
        )
        layers.append(LayerMacs(n.name or f"<{n.op_type} #{i}>", n.op_type, int(macs), quantized))
    return PrecisionStats(tuple(layers))
