"""What an ONNX classifier file says about itself: I/O, metadata_props, softmax, precision.

Reads the graph with ``onnx.load(..., load_external_data=False)`` (weights stored in external
files are not read). No inference happens here; :mod:`edge.model_spec` turns this into a
:class:`~edge.model_spec.ModelSpec`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

# A graph output that is produced by Softmax, possibly through these shape-only ops, is
# "probabilities" (Ultralytics' Classify head exports Softmax as the last node).
_PASS_THROUGH_OPS = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast"})
_SOFTMAX_OPS = frozenset({"Softmax"})
_QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
# onnx.TensorProto elem_type numbers (stable across onnx versions).
_ELEM_TYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16", 2: "uint8", 3: "int8",
               6: "int32", 7: "int64"}


@dataclass(frozen=True)
class TensorInfo:
    """One graph input/output: ``name``, ``dtype`` (numpy name, e.g. ``"float32"``) and ``shape``
    (each dim an ``int`` when fixed, the axis name ``str`` when dynamic, ``None`` when unknown)."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]


@dataclass(frozen=True)
class OnnxInfo:
    """Facts read from an ONNX file.

    Attributes:
        path: the file.
        inputs / outputs: real graph inputs (initializers excluded) and outputs, in graph order.
        metadata: ``metadata_props`` as a dict (key -> string value).
        softmax_output: the first output is produced by a Softmax node (-> probabilities).
        precision: ``"int8"`` when the graph has Q/DQ nodes, ``"fp16"`` when most float
            initializers are float16, else ``"fp32"``.
        opset: the default-domain opset version (0 if absent).
    """

    path: Path
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    softmax_output: bool = False
    precision: str = "fp32"
    opset: int = 0


class OnnxReadError(ValueError):
    """The file is not a readable ONNX model (message names the file and the parser error)."""


def _dims(type_proto: object) -> tuple[int | str | None, ...]:
    tt = type_proto.tensor_type  # type: ignore[attr-defined]
    if not tt.HasField("shape"):
        return ()
    out: list[int | str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(str(d.dim_param))
        else:
            out.append(None)
    return tuple(out)


def _tensor(vi: object) -> TensorInfo:
    elem = vi.type.tensor_type.elem_type  # type: ignore[attr-defined]
    return TensorInfo(name=vi.name, dtype=_ELEM_TYPES.get(elem, f"onnx_type_{elem}"),  # type: ignore[attr-defined]
                      shape=_dims(vi.type))  # type: ignore[attr-defined]


def read_onnx_info(path: str | Path) -> OnnxInfo:
    """Read I/O, metadata, softmax ending and precision of the ONNX model at ``path``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        OnnxReadError: the file cannot be parsed as ONNX, or is empty (0 bytes: protobuf parses
            an empty buffer as an empty ModelProto, which would otherwise surface as "graph has 0
            inputs", a metadata problem, instead of a broken file).
    """
    import onnx  # lazy: the TensorRT runtime path does not need onnx

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model file not found: {p}")
    if p.stat().st_size == 0:
        raise OnnxReadError(f"model file {p} is empty (0 bytes)")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001  (onnx raises DecodeError / google.protobuf errors)
        raise OnnxReadError(f"{p}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    g = model.graph
    init_names = {t.name for t in g.initializer}
    inputs = tuple(_tensor(i) for i in g.input if i.name not in init_names)
    outputs = tuple(_tensor(o) for o in g.output)
    metadata = {m.key: m.value for m in model.metadata_props}

    producer = {out: n for n in g.node for out in n.output}
    softmax = False
    if outputs:
        name = outputs[0].name
        for _ in range(16):
            node = producer.get(name)
            if node is None:
                break
            if node.op_type in _SOFTMAX_OPS:
                softmax = True
                break
            if node.op_type not in _PASS_THROUGH_OPS or not node.input:
                break
            name = node.input[0]

    ops = {n.op_type for n in g.node}
    if ops & _QDQ_OPS:
        precision = "int8"
    else:
        floats = [t.data_type for t in g.initializer if t.data_type in (1, 10)]
        precision = "fp16" if floats and sum(1 for t in floats if t == 10) * 2 > len(floats) else "fp32"
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return OnnxInfo(path=p, inputs=inputs, outputs=outputs, metadata=metadata,
                    softmax_output=softmax, precision=precision, opset=int(opset))


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in ``chunk_bytes`` chunks (default 1 MiB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()
