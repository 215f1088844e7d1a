#!/usr/bin/env python3
"""Train the built-in demo classifier on synthetic parts and export ``edge/demo/demo_model.onnx``.

Dev-only: needs PyTorch, which is NOT an edgeqc dependency. Run it in a separate venv with the CPU
build of torch (a plain ``pip install torch`` may pull a multi-GB CUDA build)::

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 numpy opencv-python-headless onnx onnxruntime \\
        pydantic pydantic-settings pillow      # the last three: edgeqc's own preprocess/model_spec
    /tmp/torchvenv/bin/python tools/make_demo_model.py   # ~8 min on 2 idle CPU cores

Writes ``edge/demo/demo_model.onnx`` (opset 17, input ``input`` ``[N,3,112,112] float32`` RGB,
``(x/255 - 0.5)/0.5``, stretch-resized with OpenCV INTER_AREA; output ``logits`` ``[N,4] float32``
in the order of ``edge.demo.synth.CLASSES``; the model spec in ``metadata_props`` so edgeqc needs no
configuration) and ``edge/demo/demo_model.json`` (training facts: set sizes, seeds, validation
accuracy and per-class recall, torch version, training time, sha256 of the ONNX).

Data: ``edge.demo.synth`` renders the training set (seed ``--train-seed``, split ``"train"``) and a
held-out validation set (seed ``--val-seed``, split ``"val"``) -- the very images
``synth.render_dataset(folder, n, seed, split)`` would write. The demo replay uses seed 0, split
``"demo"``; the tests use yet another seed. No checkpoint selection: the last epoch is exported, so
the validation numbers are an honest held-out estimate.

Preprocessing is the runtime's own: every rendered BGR frame goes through
``edge.frames.to_channel_order`` and ``edge.preprocess.preprocess`` with the very ``ModelSpec`` that
is written into the ONNX (``edge.model_spec.spec_to_metadata``); at the end
``edge.model_spec.resolve_spec`` must read back that same spec, else the script fails.

Reproducible: fixed seeds for rendering, initialisation, shuffling and augmentation, ``--threads``
intra-op threads; oneDNN's CPU convolutions are run-to-run deterministic at a fixed thread count, but
weights can differ in the last bits across CPUs / library versions (so the ONNX sha256 may too).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.demo import synth
from edge.frames import to_channel_order
from edge.model_spec import ModelSpec, resolve_spec, spec_to_metadata
from edge.preprocess import preprocess

OPSET = 17
SPEC = ModelSpec(
    labels=tuple(synth.CLASSES),
    input_name="input",
    output_name="logits",
    input_size=(112, 112),  # (H, W)
    resize="stretch",
    interpolation="area",  # OpenCV INTER_AREA: cheap and alias-free for this 160 -> 112 downscale
    channel_order="RGB",
    scale=1.0 / 255.0,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    output="logits",
    dynamic_batch=True,
    max_batch=None,  # no limit from the model (dynamic batch axis)
)
INPUT_SIZE = SPEC.input_size


# ------------------------------------------------------------------------------------------------ data
def model_input(img_bgr: np.ndarray) -> np.ndarray:
    """Rendered BGR frame -> ``[3,112,112] float32``, exactly as the runtime does it: the capture
    boundary's :func:`edge.frames.to_channel_order`, then :func:`edge.preprocess.preprocess`."""
    return preprocess(to_channel_order(img_bgr, SPEC.channel_order), SPEC)


def _render_chunk(args: tuple[int, str, str, int, int]) -> tuple[np.ndarray, np.ndarray]:
    seed, split, label, k0, k1 = args
    cv2.setNumThreads(1)
    xs = np.empty((k1 - k0, 3, *INPUT_SIZE), np.float32)
    for i, k in enumerate(range(k0, k1)):
        bgr = synth.render_part(synth.part_rng(seed, split, label, k), label)
        preprocess(to_channel_order(bgr, SPEC.channel_order), SPEC, out=xs[i])
    return xs, np.full(k1 - k0, synth.CLASSES.index(label), np.int64)


def render_set(seed: int, split: str, per_class: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Render ``per_class`` images of every class and preprocess them:
    ``([N,3,112,112] float32, [N] int64 class index)``, class-major order."""
    chunk = 200
    jobs = [(seed, split, c, k, min(k + chunk, per_class)) for c in synth.CLASSES for k in range(0, per_class, chunk)]
    with ProcessPoolExecutor(max_workers=workers) as ex:
        parts = list(ex.map(_render_chunk, jobs))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ----------------------------------------------------------------------------------- runtime contract
def metadata_props() -> dict[str, str]:
    """ONNX metadata: the whole spec as ``edgeqc.<field>`` JSON (:func:`edge.model_spec.spec_to_metadata`),
    plus the Ultralytics-compatible ``names``/``imgsz``/``task`` and a renderer version tag."""
    names = "{" + ", ".join(f"{i}: {c!r}" for i, c in enumerate(SPEC.labels)) + "}"
    meta = {
        "names": names,
        "imgsz": f"[{INPUT_SIZE[0]}, {INPUT_SIZE[1]}]",
        "task": "classify",
        "description": "edgeqc demo classifier: synthetic machined parts (free/scratch/hole/crack)",
    }
    meta.update(spec_to_metadata(SPEC))
    meta["edgeqc.demo.synth_version"] = str(synth.SYNTH_VERSION)
    return meta


# ----------------------------------------------------------------------------------------------- model
def build_model():
    """Tiny CNN, ~77 k parameters: 6 conv3x3+BN+ReLU (4 of stride 2: 112 -> 7 px), global MAX pool,
    linear. Max rather than average pooling: a defect covers well under 1 % of the image, and the
    max passes its evidence on undiluted (with average pooling training stalled for longer)."""
    from torch import nn

    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(3, 16, 2),  # 56x56
        *block(16, 32, 2),  # 28x28
        *block(32, 32, 1),
        *block(32, 48, 2),  # 14x14
        *block(48, 48, 1),
        *block(48, 64, 2),  # 7x7
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(64, len(synth.CLASSES)),
    )


def fuse_bn(model):
    """Copy of ``model`` (eval) with every Conv2d+BatchNorm2d pair folded into one Conv2d."""
    import copy

    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    layers = list(copy.deepcopy(model).eval())
    out: list[nn.Module] = []
    i = 0
    while i < len(layers):
        if isinstance(layers[i], nn.Conv2d) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm2d):
            out.append(fuse_conv_bn_eval(layers[i], layers[i + 1]))
            i += 2
        else:
            out.append(layers[i])
            i += 1
    return nn.Sequential(*out).eval()


def augment(x):
    """Random flips and 90-degree turns of a batch ``[N,3,H,W]`` (the parts look alike under them)."""
    import torch

    if torch.rand(()) < 0.5:
        x = x.flip(3)
    if torch.rand(()) < 0.5:
        x = x.flip(2)
    if torch.rand(()) < 0.5:
        x = x.transpose(2, 3)
    return x


def evaluate_logits(logits: np.ndarray, y: np.ndarray) -> dict:
    pred = logits.argmax(1)
    n = len(synth.CLASSES)
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (y, pred), 1)
    recall = {c: float(cm[i, i] / max(cm[i].sum(), 1)) for i, c in enumerate(synth.CLASSES)}
    return {
        "top1": float((pred == y).mean()),
        "correct": int((pred == y).sum()),
        "total": len(y),
        "recall": recall,
        "confusion_matrix_rows_true_cols_pred": cm.tolist(),
        # pass class = free: a defect predicted free is an escape, a free predicted defect a false reject
        "defect_escapes": int(cm[1:, 0].sum()),
        "false_rejects": int(cm[0, 1:].sum()),
    }


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train-per-class", type=int, default=1200)
    ap.add_argument("--val-per-class", type=int, default=250)
    ap.add_argument("--train-seed", type=int, default=1)
    ap.add_argument("--val-seed", type=int, default=2)
    ap.add_argument("--torch-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=45)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads and render workers")
    ap.add_argument("--out", type=Path, default=REPO / "edge" / "demo" / "demo_model.onnx")
    args = ap.parse_args(argv)

    import onnx
    import onnxruntime as ort
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.torch_seed)
    random.seed(args.torch_seed)
    np.random.seed(args.torch_seed)

    t0 = time.perf_counter()
    xtr_np, ytr = render_set(args.train_seed, "train", args.train_per_class, args.threads)
    xva_np, yva = render_set(args.val_seed, "val", args.val_per_class, args.threads)
    t_render = time.perf_counter() - t0
    print(f"rendered train {len(ytr)} + val {len(yva)} images in {t_render:.1f} s", flush=True)

    xtr = torch.from_numpy(xtr_np)
    ytr_t = torch.from_numpy(ytr)
    xva = torch.from_numpy(xva_np)

    # channels_last: about 2x faster convolutions on CPU (oneDNN); same maths
    xtr = xtr.contiguous(memory_format=torch.channels_last)
    model = build_model().to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-3)
    steps_per_epoch = math.ceil(len(ytr) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.15
    )
    gen = torch.Generator().manual_seed(args.torch_seed)
    t1 = time.perf_counter()
    history = []
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=gen)
        tot, n_ok, n = 0.0, 0, 0
        for s in range(steps_per_epoch):
            idx = perm[s * args.batch : (s + 1) * args.batch]
            xb, yb = augment(xtr[idx]), ytr_t[idx]
            out = model(xb)
            loss = F.cross_entropy(out, yb, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
            n_ok += int((out.argmax(1) == yb).sum())
            n += len(idx)
        model.eval()
        with torch.no_grad():
            va = evaluate_logits(torch.cat([model(xva[i : i + 256]) for i in range(0, len(yva), 256)]).numpy(), yva)
        history.append({"epoch": epoch + 1, "loss": round(tot / n, 4), "train_acc": round(n_ok / n, 4),
                        "val_top1": round(va["top1"], 4)})
        rec = " ".join(f"{c}={r:.3f}" for c, r in va["recall"].items())
        print(f"epoch {epoch + 1:2d}/{args.epochs} loss {tot / n:.4f} train {n_ok / n:.4f} "
              f"val {va['top1']:.4f} [{rec}] {time.perf_counter() - t1:.0f}s", flush=True)
    t_train = time.perf_counter() - t1

    # ---- export (BatchNorm folded, dropout removed: plain Conv/Relu/GAP/Gemm graph)
    fused = fuse_bn(model)
    with torch.no_grad():
        ref = model(xva[:64]).numpy()
        diff_fuse = float(np.abs(fused(xva[:64]).numpy() - ref).max())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, *INPUT_SIZE)
    torch.onnx.export(
        fused, (dummy,), str(args.out), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=OPSET, dynamo=False,
        do_constant_folding=True,
    )
    m = onnx.load(str(args.out))
    meta = metadata_props()
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    m.producer_name = "edgeqc tools/make_demo_model.py"
    m.doc_string = meta["description"]
    onnx.checker.check_model(m)
    onnx.save(m, str(args.out))
    blob = args.out.read_bytes()

    # ---- validate the ONNX with onnxruntime on the held-out set
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(args.out), so, providers=["CPUExecutionProvider"])
    onnx_logits = np.concatenate([sess.run(["logits"], {"input": xva_np[i : i + 64]})[0]
                                  for i in range(0, len(yva), 64)])
    diff_onnx = float(np.abs(onnx_logits[:64] - ref).max())
    val = evaluate_logits(onnx_logits, yva)

    # ---- runtime contract: the spec resolver reads back exactly what was trained with
    resolved = resolve_spec(args.out)  # no config overrides: metadata only
    contract = {
        "preprocessing": "edge.frames.to_channel_order + edge.preprocess.preprocess (the runtime's own)",
        "metadata": "edge.model_spec.spec_to_metadata + Ultralytics names/imgsz/task",
        "resolve_spec": resolved.describe(),
        "resolve_spec_matches": resolved == SPEC,
    }
    if resolved != SPEC:
        print(f"ERROR: resolve_spec gave {resolved!r}, trained with {SPEC!r}", file=sys.stderr)

    # ---- CPU latency of the exported model (batch 1, one thread; informative, edgeqc bench measures)
    one = xva_np[:1]
    for _ in range(20):
        sess.run(["logits"], {"input": one})
    reps = 300
    ts = time.perf_counter()
    for _ in range(reps):
        sess.run(["logits"], {"input": one})
    lat_ms = (time.perf_counter() - ts) / reps * 1000

    info = {
        "model": args.out.name,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
        "classes": list(synth.CLASSES),
        "input": {"name": "input", "shape": ["N", 3, *INPUT_SIZE], "dtype": "float32",
                  "channel_order": SPEC.channel_order, "resize": SPEC.resize, "interpolation": SPEC.interpolation,
                  "scale": SPEC.scale, "mean": list(SPEC.mean), "std": list(SPEC.std)},
        "output": {"name": "logits", "shape": ["N", len(synth.CLASSES)], "dtype": "float32"},
        "opset": OPSET,
        "parameters": n_params,
        "synth_version": synth.SYNTH_VERSION,
        "synth_image_size": [synth.IMAGE_HEIGHT, synth.IMAGE_WIDTH],
        "data": {"train": {"seed": args.train_seed, "split": "train", "per_class": args.train_per_class,
                           "total": len(ytr)},
                 "val": {"seed": args.val_seed, "split": "val", "per_class": args.val_per_class,
                         "total": len(yva)},
                 "demo_replay": {"seed": 0, "split": "demo"}},
        "training": {"epochs": args.epochs, "batch": args.batch, "optimizer": "AdamW wd 1e-3",
                     "schedule": f"OneCycle max_lr {args.lr}", "loss": "cross-entropy, label smoothing 0.05",
                     "augmentation": "random h/v flip and transpose", "torch_seed": args.torch_seed,
                     "threads": args.threads, "checkpoint": "last epoch (no selection on val)",
                     "render_s": round(t_render, 1), "train_s": round(t_train, 1), "history": history},
        "val_onnxruntime": val,
        "export_checks": {"bn_fold_max_abs_diff": diff_fuse, "onnx_vs_torch_max_abs_diff": diff_onnx},
        "runtime_contract": contract,
        "cpu_latency_ms_batch1_1thread": round(lat_ms, 3),
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                     "numpy": np.__version__, "opencv": cv2.__version__, "python": platform.python_version()},
        "command": "python tools/make_demo_model.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    info_path = args.out.with_suffix(".json")
    info_path.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: info[k] for k in ("sha256", "bytes", "parameters", "cpu_latency_ms_batch1_1thread")}))
    print(f"val (onnxruntime) top1 {val['top1']:.4f} ({val['correct']}/{val['total']}), recall "
          + ", ".join(f"{c} {r:.3f}" for c, r in val["recall"].items())
          + f"; escapes {val['defect_escapes']}, false rejects {val['false_rejects']}")
    print(f"wrote {args.out} and {info_path}")
    ok = val["top1"] >= 0.97 and contract["resolve_spec_matches"]
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    raise SystemExit(main())
