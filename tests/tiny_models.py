"""Tiny ONNX classifiers built with onnx.helper for the model-side tests (no shared files needed).

The graph is ``[N,3,H,W] -> GlobalAveragePool -> Flatten -> Gemm(W, b) -> [N,C]`` (optionally
Softmax, optionally a Q/DQ pair on the input), so the expected output is easy to compute in
numpy: :func:`expected_logits`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def weights(classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic Gemm weights ``W [C,3]`` and bias ``b [C]``."""
    w = (np.arange(classes * 3, dtype=np.float32).reshape(classes, 3) - classes) / 3.0
    b = np.linspace(-0.5, 0.5, classes, dtype=np.float32)
    return w, b


def expected_logits(x: np.ndarray, classes: int) -> np.ndarray:
    """Reference output of :func:`make_classifier` for ``x [N,3,H,W]`` (float64)."""
    w, b = weights(classes)
    return x.astype(np.float64).mean(axis=(2, 3)) @ w.T.astype(np.float64) + b


def make_classifier(path: Path, classes: int = 5, *, batch: int | str = "N",
                    height: int | str = 8, width: int | str = 8, softmax: bool = False,
                    qdq: bool = False, metadata: dict[str, str] | None = None,
                    input_name: str = "input", output_name: str = "logits") -> Path:
    """Write the tiny classifier to ``path`` and return ``path``."""
    w, b = weights(classes)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
    nodes = []
    src = input_name
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "q_scale"),
                  numpy_helper.from_array(np.array(0, np.int8), "q_zero")]
        nodes += [helper.make_node("QuantizeLinear", [src, "q_scale", "q_zero"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "q_scale", "q_zero"], ["xdq"])]
        src = "xdq"
    nodes += [helper.make_node("GlobalAveragePool", [src], ["gap"]),
              helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
              helper.make_node("Gemm", ["flat", "W", "B"], ["gemm" if softmax else output_name], transB=1)]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["gemm"], [output_name], axis=1))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 3, height, width])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, classes])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_labelled_images(folder: Path, labels: list[str], n: int) -> Path:
    """``n`` random 16x12 RGB PNGs in ``folder/<label>/`` (labels in turn, seed 0); returns ``folder``."""
    import cv2

    rng = np.random.default_rng(0)
    for i in range(n):
        d = folder / labels[i % len(labels)]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"img{i:02d}.png"), rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    return folder
