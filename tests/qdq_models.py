"""Tiny conv classifiers and image folders for the calibration / build tests (no shared files needed).

``make_convnet``: ``[N,3,16,16] -> Conv 3->8 3x3 -> Relu -> Conv 8->8 3x3 -> Add (residual) ->
GlobalAveragePool -> Flatten -> Gemm 8->C``, deterministic weights, with a ``labels.txt`` beside it.
``make_images``: a folder of small PNG/JPEG images, optionally in class subfolders.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LABELS = ("good", "scratch", "dent")


def make_convnet(path: Path, labels: tuple[str, ...] = LABELS, *, size: int = 16, batch: int | str = "N") -> Path:
    """Write the tiny conv classifier to ``path`` (+ ``labels.txt`` in its folder); return ``path``."""
    rng = np.random.default_rng(7)
    c = len(labels)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b2"),
        numpy_helper.from_array(rng.normal(0, 0.5, (c, 8)).astype(np.float32), "wf"),
        numpy_helper.from_array(np.zeros(c, np.float32), "bf"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["a"], name="add"),
        helper.make_node("GlobalAveragePool", ["a"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "convnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, c])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    (path.parent / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    return path


def make_images(folder: Path, count: int, *, classes: tuple[str, ...] | None = None, seed: int = 0,
                size: tuple[int, int] = (24, 32)) -> list[Path]:
    """Write ``count`` small images (PNG, every third a JPEG) to ``folder`` (round-robin over the
    class subfolders when ``classes`` is given); return their paths."""
    rng = np.random.default_rng(seed)
    out: list[Path] = []
    for i in range(count):
        sub = folder / classes[i % len(classes)] if classes else folder
        sub.mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        p = sub / (f"img_{i:04d}.jpg" if i % 3 == 2 else f"img_{i:04d}.png")
        assert cv2.imwrite(str(p), img)
        out.append(p)
    return out


def corrupt_images(folder: Path) -> list[Path]:
    """Add a truncated JPEG and a non-image file with an image suffix to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", np.full((32, 32, 3), 128, np.uint8))
    assert ok
    truncated = folder / "zz_truncated.jpg"
    truncated.write_bytes(buf.tobytes()[: len(buf) // 2])
    garbage = folder / "zz_garbage.png"
    garbage.write_bytes(b"this is not an image")
    return [truncated, garbage]


DIFF_LABELS = ("good", "scratch")


def make_diffnet(path: Path) -> Path:
    """A classifier that only looks at a 1-2 grey-level difference between the R and G channels:
    ``good`` when G > R, ``scratch`` when R > G. Quantizing its *input* to int8 erases that
    difference (the input scale is ~1.5 grey levels), exactly like the stem of mt-effnet-lite0
    on low-contrast tiles; keeping the first layer ``diff`` in float restores it.

    ``[N,3,8,8] -> Conv 1x1 (diff: 40*(G-R), 40*(R-G)) -> Relu -> Conv 1x1 (mix) -> GAP -> Flatten -> Gemm``
    """
    w1 = np.zeros((2, 3, 1, 1), np.float32)
    w1[0, 0], w1[0, 1] = -40.0, 40.0
    w1[1, 0], w1[1, 1] = 40.0, -40.0
    w2 = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32).reshape(2, 2, 1, 1)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.zeros(2, np.float32), "b1"),
             numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(np.zeros(2, np.float32), "b2"),
             numpy_helper.from_array(np.eye(2, dtype=np.float32) * 4, "wf"),
             numpy_helper.from_array(np.zeros(2, np.float32), "bf")]
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["d"], name="diff"),
             helper.make_node("Relu", ["d"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2", "b2"], ["m"], name="mix"),
             helper.make_node("GlobalAveragePool", ["m"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
             helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(
        nodes, "diffnet", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    (path.parent / "labels.txt").write_text("\n".join(DIFF_LABELS) + "\n", encoding="utf-8")
    return path


def make_diff_images(folder: Path, count: int, *, labelled: bool, seed: int = 0) -> None:
    """Flat grey PNGs (level 150-200) whose G channel is 1 level above (good) or below (scratch)
    R, with one white pixel (so the calibrated input scale is 1/127: ~2 grey levels per int8 step);
    in class subfolders when ``labelled``."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        cls = DIFF_LABELS[i % 2]
        base = int(rng.integers(150, 200))
        delta = 1 if cls == "good" else -1
        img = np.empty((8, 8, 3), np.uint8)  # OpenCV order: B, G, R
        img[:, :, 0], img[:, :, 1], img[:, :, 2] = base, base + delta, base
        img[0, 0] = 255
        sub = folder / cls if labelled else folder
        sub.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(sub / f"d_{i:03d}.png"), img)
