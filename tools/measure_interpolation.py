#!/usr/bin/env python3
"""Which resize interpolation reproduces the model cards' val figures?

Runs the shared models with ONNX Runtime (CPU) over a labelled folder (``<val>/<class>/*.jpg``)
and prints, per preprocessing variant: top-1, defect escapes (defective -> ``free``), false
rejects (``free`` -> defect), the confusion matrix, agreement of the top-1 label with the card's
reference pipeline and the largest input difference from it.

Variants for mt-effnet-lite0 (stretch 224x224, ImageNet mean/std):
  ``card``            the card's own code: ``PIL.Image.open().convert('RGB').resize(BILINEAR)``;
  ``pillow_bilinear`` / ``area`` / ``linear`` / ``nearest`` / ``cubic``: edgeqc's
  ``edge.frames.read_image`` (OpenCV decode) + ``edge.preprocess.preprocess``.
For mt-yolo-cls: edgeqc center_crop + pillow_bilinear (+ area/linear for comparison).

Usage: .venv/bin/python tools/measure_interpolation.py [--shared ../shared] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.frames import list_images, read_image
from edge.model_spec import ModelSpec, resolve_spec
from edge.preprocess import preprocess
from edge.settings import ModelSettings

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PASS_LABEL = "free"


def card_effnet_tensor(path: Path) -> np.ndarray:
    """mt-effnet-lite0 MODEL_CARD preprocessing, verbatim (Pillow decode + resize)."""
    from PIL import Image

    img = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return x.transpose(2, 0, 1)


def run(session, spec: ModelSpec, tensors: np.ndarray, batch: int = 32) -> np.ndarray:
    preds = []
    for i in range(0, len(tensors), batch):
        out = session.run([spec.output_name], {spec.input_name: tensors[i:i + batch]})[0]
        preds.append(out.argmax(axis=1))
    return np.concatenate(preds)


def figures(truth: np.ndarray, pred: np.ndarray, labels: tuple[str, ...]) -> dict:
    C = len(labels)
    cm = np.zeros((C, C), int)
    for t, p in zip(truth, pred):
        cm[t, p] += 1
    free = labels.index(PASS_LABEL)
    defective = truth != free
    return {
        "top1": int((truth == pred).sum()), "n": len(truth),
        "escape": int(((pred == free) & defective).sum()), "defective": int(defective.sum()),
        "false_reject": int(((pred != free) & ~defective).sum()), "free": int((~defective).sum()),
        "confusion": cm.tolist(),
    }


def show(name: str, f: dict, agree: int | None, max_diff: float | None, seconds: float) -> None:
    extra = ""
    if agree is not None:
        extra = f"  agree with card pipeline {agree}/{f['n']}, max |dx| {max_diff:.4g}"
    print(f"{name:<16} top-1 {f['top1']}/{f['n']} ({100 * f['top1'] / f['n']:.2f} %), escape "
          f"{f['escape']}/{f['defective']}, FR {f['false_reject']}/{f['free']}{extra}  [{seconds:.1f} s]")
    print("                 confusion (rows true): " + " ".join(str(r) for r in f["confusion"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--json", type=Path, help="write all figures to this JSON file")
    args = ap.parse_args()
    import onnxruntime as ort

    val = args.shared / "datasets" / "magnetic-tile" / "val"
    files = list_images(val)
    classes = sorted(p.name for p in val.iterdir() if p.is_dir())
    truth = np.array([classes.index(p.relative_to(val).parts[0]) for p in files])
    frames = [read_image(p) for p in files]
    if any(f is None for f in frames):
        print("unreadable val images", file=sys.stderr)
        return 1
    results: dict[str, dict] = {}
    opts = ort.SessionOptions()

    # --- mt-effnet-lite0 ---------------------------------------------------------------------
    eff = args.shared / "models" / "mt-effnet-lite0" / "model.onnx"
    sess = ort.InferenceSession(str(eff), opts, providers=["CPUExecutionProvider"])
    print(f"mt-effnet-lite0 on {len(files)} val images (card: 254/268, escape 6/78, FR 6/190)")
    t0 = time.perf_counter()
    ref_x = np.stack([card_effnet_tensor(p) for p in files])
    base = resolve_spec(eff, ModelSettings(mean=IMAGENET_MEAN, std=IMAGENET_STD))
    assert tuple(base.labels) == tuple(classes), (base.labels, classes)
    ref_pred = run(sess, base, ref_x)
    f = figures(truth, ref_pred, base.labels)
    results["effnet/card"] = f
    show("card (PIL)", f, None, None, time.perf_counter() - t0)
    for interp in ("pillow_bilinear", "area", "linear", "cubic", "nearest"):
        t0 = time.perf_counter()
        spec = resolve_spec(eff, ModelSettings(mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation=interp))
        x = np.stack([preprocess(fr, spec) for fr in frames])
        pred = run(sess, spec, x)
        f = figures(truth, pred, spec.labels)
        f["agree_with_card"] = int((pred == ref_pred).sum())
        f["max_abs_input_diff"] = float(np.abs(x - ref_x).max())
        results[f"effnet/{interp}"] = f
        show(interp, f, f["agree_with_card"], f["max_abs_input_diff"], time.perf_counter() - t0)

    # --- mt-yolo-cls ---------------------------------------------------------------------------
    yolo = args.shared / "models" / "mt-yolo-cls" / "model.onnx"
    if yolo.is_file():
        sess = ort.InferenceSession(str(yolo), opts, providers=["CPUExecutionProvider"])
        print("\nmt-yolo-cls (card: 189/268, escape 43/78, FR 29/190), spec from its metadata")
        for interp in ("pillow_bilinear", "area", "linear"):
            t0 = time.perf_counter()
            spec = resolve_spec(yolo, ModelSettings(interpolation=interp))
            x = np.stack([preprocess(fr, spec) for fr in frames])
            pred = run(sess, spec, x)
            f = figures(truth, pred, spec.labels)
            results[f"yolo/{spec.resize}+{interp}"] = f
            show(f"{spec.resize}+{interp}"[:16], f, None, None, time.perf_counter() - t0)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
