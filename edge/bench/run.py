"""``edgeqc bench``: every figure of issue 6 measured side by side in one run.

Order (each item's own figures are interleaved; see the item modules):

0. decode the images once (JPEG decode time per frame, reported apart), make the tensors, and
   check preprocessing allocations (``tracemalloc``);
1. bare ONNX Runtime on pre-made tensors vs the full free-run pipeline on the same images
   (:mod:`edge.bench.pipeline`), alternating blocks, ``rounds`` times;
5. the same pipeline with the no-op backend: what the product costs per frame;
3. FP32 vs INT8 Q/DQ (:mod:`edge.bench.precision`);
2. trigger -> RES over a pty at ``rate_hz`` vs paced bare inference, with the per-stage breakdown
   (item 4) and the RSS growth over the run (item 6; the soak is ``--duration``).

RSS is sampled every 0.5 s through the whole run; load average and versions are recorded.
"""

from __future__ import annotations

import logging
import platform
import time
import tracemalloc
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.backends.onnxruntime import usable_cpus
from edge.bench.bare import BareSession, make_tensors
from edge.bench.measure import RssSampler, load_average, median_ci, peak_rss_bytes, summary
from edge.bench.pipeline import Block, FreeRunRig
from edge.bench.setup import BenchSetup
from edge.capture.memory import MemoryItem, decode_folder
from edge.frames import list_images, read_image
from edge.model_spec import ModelSpec, resolve_spec
from edge.preprocess import Preprocessor

log = logging.getLogger("edgeqc.bench")

MAX_FRAMES = 512  # decoded frames kept in memory (cycled through)


def _versions() -> dict[str, str]:
    import cv2
    import onnxruntime
    import PIL
    import zmq

    return {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": onnxruntime.__version__,
            "opencv": cv2.__version__, "pillow": PIL.__version__, "pyzmq": zmq.__version__,
            "platform": platform.platform()}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    import os

    return {"cpu": _cpu_model(), "logical_cpus": os.cpu_count(),
            "usable_cpus": usable_cpus()}


def decode_item(setup: BenchSetup, spec: ModelSpec) -> tuple[list[MemoryItem], dict[str, Any]]:
    """Decode the images into memory; time a second decode pass (ms per frame, reported apart)."""
    items, corrupt = decode_folder(setup.images, spec.channel_order, limit=MAX_FRAMES)
    if not items:
        raise ValueError(f"{setup.images}: no readable image")
    files = list_images(setup.images)[: min(len(items), 100)]
    times = []
    for p in files:
        t = time.perf_counter()
        read_image(p, spec.channel_order)
        times.append(1000.0 * (time.perf_counter() - t))
    shapes: dict[str, int] = {}
    for img, _, _ in items:
        key = "x".join(str(v) for v in img.shape)
        shapes[key] = shapes.get(key, 0) + 1
    common = sorted(shapes.items(), key=lambda kv: -kv[1])[:3]
    return items, {"frames": len(items), "corrupt_skipped": corrupt, "decode_ms": summary(times),
                   "frame_shapes_top": dict(common), "model_input": list(spec.input_size),
                   "interpolation": spec.interpolation}


def alloc_item(items: Sequence[MemoryItem], spec: ModelSpec, frames: int = 40) -> dict[str, Any]:
    """Python-heap allocations of preprocessing in the steady state (``tracemalloc``): net growth
    and the largest transient peak per frame over ``frames`` frames after one warm-up pass."""
    pre = Preprocessor(spec, 1)
    sample = [items[i % len(items)][0] for i in range(frames)]
    for img in sample:
        pre.one(img)  # warm-up: per-thread buffers for every frame size
    tracemalloc.start()
    try:
        worst = 0
        base, _ = tracemalloc.get_traced_memory()
        for img in sample:
            tracemalloc.reset_peak()
            cur, _ = tracemalloc.get_traced_memory()
            pre.one(img)
            _, peak = tracemalloc.get_traced_memory()
            worst = max(worst, peak - cur)
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    H, W = spec.input_size
    limit = max(H * W, 8192)  # one H x W uint8 plane (at least 8 KiB: tiny models)
    return {"frames": frames, "net_bytes": int(end - base), "max_transient_bytes_per_frame": int(worst),
            "frame_sized_threshold_bytes": limit, "zero_frame_sized": bool(worst < limit and end - base < limit)}


def _ratios(bare: list[Any], pipe: list[Block]) -> dict[str, Any]:
    """Per round: bare ms/frame / pipeline ms/frame, each in its block's steady state; the median
    over rounds with its bootstrap interval. ``throughput_ratio_of_totals``: whole blocks (fill and
    drain included), all rounds summed."""
    thr = [b.steady_ms_per_item / p.steady_ms_per_item for b, p in zip(bare, pipe)]
    cpu = [b.cpu_ms_per_item / p.cpu_ms_per_item for b, p in zip(bare, pipe) if p.cpu_s > 0]
    return {"throughput_ratio_per_round": [round(x, 3) for x in thr],
            "throughput_ratio": round(float(np.median(thr)), 3),
            "throughput_ratio_ci90": median_ci(thr),
            "throughput_ratio_of_totals": round(sum(b.wall_s for b in bare) / max(1e-9, sum(p.wall_s for p in pipe))
                                                * sum(p.n for p in pipe) / max(1, sum(b.n for b in bare)), 3),
            "cpu_efficiency_ratio": round(float(np.median(cpu)), 3) if cpu else None}


def _blocks(blocks: Sequence[Any]) -> dict[str, Any]:
    return {"rounds": len(blocks), "frames_per_round": blocks[0].n if blocks else 0,
            "ms_per_frame": [round(b.ms_per_item, 3) for b in blocks],
            "ms_per_frame_median": round(float(np.median([b.ms_per_item for b in blocks])), 3),
            "steady_ms_per_frame_median": round(float(np.median([b.steady_ms_per_item for b in blocks])), 3),
            "cpu_ms_per_frame_median": round(float(np.median([b.cpu_ms_per_item for b in blocks])), 3),
            "fps_median": round(1000.0 / float(np.median([b.ms_per_item for b in blocks])), 2)}


def _stages(blocks: Sequence[Block]) -> dict[str, Any]:
    keys = ("preprocess", "infer", "decide", "plc", "total")
    out = {k: summary([x for b in blocks for x in b.stages.get(k, ())]) for k in keys}
    sinks: dict[str, list[float]] = {}
    for b in blocks:
        for k, v in b.sinks.items():
            sinks.setdefault(k, []).extend(v)
    out.update({f"sink_{k}": summary(v) for k, v in sinks.items()})
    return out


def pipeline_item(setup: BenchSetup, spec: ModelSpec, items: Sequence[MemoryItem],
                  tensors: Sequence[np.ndarray]) -> tuple[dict[str, Any], BareSession]:
    """Item 1: bare session vs free-run pipeline, alternating blocks of the same frames. Returns
    the figures and the (warm) bare session, reused by item 2."""
    from edge.app import open_backend_for

    sz = setup.sizes
    bare = BareSession(setup.model, setup.settings.model, spec)
    bare.warm(tensors)
    backend = open_backend_for(setup.settings)
    bare_blocks: list[Any] = []
    pipe_blocks: list[Block] = []
    try:
        with FreeRunRig(setup.settings, backend, items) as rig:
            rig.block(min(5, sz.frames))  # warm-up
            for r in range(sz.pipeline_rounds):
                first_bare = r % 2 == 0
                for side in ("bare", "pipe") if first_bare else ("pipe", "bare"):
                    if side == "bare":
                        bare_blocks.append(bare.tight(tensors, sz.frames, start=r * sz.frames))
                    else:
                        pipe_blocks.append(rig.block(sz.frames))
            closing = rig.close()
    finally:
        backend.close()
    out: dict[str, Any] = {"bare": _blocks(bare_blocks), "pipeline": _blocks(pipe_blocks)}
    out["bare"]["latency_ms"] = summary([x for b in bare_blocks for x in b.latencies_ms])
    out.update(_ratios(bare_blocks, pipe_blocks))
    out["pipeline_stages_ms"] = _stages(pipe_blocks)
    out["pipeline_stats"] = closing.get("stats", {})
    out["plc_free_run_results"] = closing.get("plc_free_run_results")
    return out, bare


def at_input_size(items: Sequence[MemoryItem], spec: ModelSpec) -> list[MemoryItem]:
    """The frames resized to the model input (H x W) with the model's interpolation: a camera whose
    region of interest is set to the model size delivers such frames."""
    from edge.preprocess import _fit, _workspace

    H, W = spec.input_size
    out = []
    for img, sid, label in items:
        fitted = _fit(img, spec, _workspace())
        if fitted.ndim == 3:
            fitted = fitted[:, :, :3]
        out.append((np.ascontiguousarray(fitted).copy(), sid, label))
        assert out[-1][0].shape[:2] == (H, W)
    return out


def noop_item(setup: BenchSetup, spec: ModelSpec, items: Sequence[MemoryItem]) -> dict[str, Any]:
    """Item 5: the whole free-run pipeline with the no-op backend (pass verdicts: the common path),
    on frames at the model input size (the target's condition) and on the original frames (which
    add the resize), alternating blocks."""
    from edge.backends.noop import NoopBackend

    sz = setup.sizes
    row = [1.0 if lab == setup.settings.decision.pass_classes[0] else 0.0 for lab in spec.labels]
    variants = {"input_size": at_input_size(items, spec), "native": list(items)}
    out: dict[str, Any] = {}
    blocks: dict[str, list[Block]] = {k: [] for k in variants}
    rigs = {}
    try:
        for name, frames in variants.items():
            backend = NoopBackend(spec, row, model_path=setup.model, max_batch=setup.settings.model.max_batch)
            rigs[name] = FreeRunRig(setup.settings, backend, frames)
            rigs[name].block(min(20, sz.noop_frames))  # warm-up
        for r in range(sz.rounds):
            for name in (variants if r % 2 == 0 else reversed(list(variants))):
                blocks[name].append(rigs[name].block(sz.noop_frames))
    finally:
        closing = {name: rig.close() for name, rig in rigs.items()}
    for name, bl in blocks.items():
        out[name] = _blocks(bl)
        out[name]["stages_ms"] = _stages(bl)
        out[name]["pipeline_stats"] = closing.get(name, {}).get("stats", {})
    H, W = spec.input_size
    out["input_size"]["frames"] = f"{H}x{W} (resized beforehand)"
    out["native"]["frames"] = "as decoded (resize to the model input is part of the pipeline)"
    out["ms_per_frame_median"] = out["input_size"]["ms_per_frame_median"]
    out["cpu_ms_per_frame_median"] = out["input_size"]["cpu_ms_per_frame_median"]
    out["note"] = ("in-memory frames (no JPEG decode; see decode.decode_ms), free-run, PLC RES on a pty, ZeroMQ "
                   "publish (no subscriber), metrics, archive; pass verdicts (no reject JPEG)")
    return out


def run_bench(setup: BenchSetup, argv: Sequence[str] | None = None,
              progress: Any = None) -> dict[str, Any]:
    """Run every item; returns the JSON-ready result (see docs/performance.md for the fields)."""
    say = progress or (lambda msg: None)
    rss = RssSampler(0.5).start()
    t_start = time.monotonic()
    spec = resolve_spec(setup.model, setup.settings.model)
    result: dict[str, Any] = {
        "schema": 1, "command": " ".join(["edgeqc", "bench", *(argv or [])]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(), "versions": _versions(),
        "load_average_start": load_average(), "model": str(setup.model), "images": str(setup.images),
        "model_spec": {"input_size": list(spec.input_size), "interpolation": spec.interpolation,
                       "resize": spec.resize, "labels": list(spec.labels)},
        "threads": {"intra_op_threads": setup.settings.model.intra_op_threads,
                    "meaning": "the number every session used (0 in the settings = auto: one core fewer than usable, 1..4)"},
        "sizes": vars(setup.sizes), "notes": list(setup.notes),
    }
    try:
        say("decoding images")
        items, dec = decode_item(setup, spec)
        result["decode"] = dec
        tensors = make_tensors([it[0] for it in items], spec)
        result["preprocess_alloc"] = alloc_item(items, spec)
        say(f"item 1: bare vs pipeline ({setup.sizes.pipeline_rounds} rounds x {setup.sizes.frames} frames)")
        result["item1_bare_vs_pipeline"], bare = pipeline_item(setup, spec, items, tensors)
        say(f"item 5: no-op backend ({setup.sizes.rounds} rounds x {setup.sizes.noop_frames} frames)")
        result["item5_noop_overhead"] = noop_item(setup, spec, items)
        say("item 3: FP32 vs INT8")
        result["item3_fp32_vs_int8"] = precision_item_safe(setup, spec, tensors)
        say(f"items 2, 4, 6: trigger mode at {setup.sizes.rate_hz:g}/s for {setup.sizes.duration_s:g} s")
        from edge.bench.trigger import trigger_run

        result["item2_trigger"] = trigger_run(setup.settings, bare, tensors, duration_s=setup.sizes.duration_s,
                                              block_s=setup.sizes.block_s, rate_hz=setup.sizes.rate_hz, rss=rss)
    finally:
        rss.stop()
    result["item6_memory"] = {"peak_rss_mib": round(peak_rss_bytes() / 2**20, 1),
                              "trigger_run": result.get("item2_trigger", {}).get("rss"),
                              "preprocess_alloc": result.get("preprocess_alloc")}
    result["load_average_end"] = load_average()
    result["seconds"] = round(time.monotonic() - t_start, 1)
    from edge.bench.report import targets

    result["targets"] = targets(result)
    return result


def precision_item_safe(setup: BenchSetup, spec: ModelSpec, tensors: Sequence[np.ndarray]) -> dict[str, Any]:
    from edge.bench.precision import precision_item

    try:
        return precision_item(setup, spec, tensors, rounds=setup.sizes.rounds, runs=setup.sizes.precision_runs,
                              threads_note=str(setup.settings.model.intra_op_threads))
    except Exception as exc:  # a failed INT8 step must not lose the other figures
        log.exception("FP32 vs INT8 item failed")
        return {"skipped": f"failed: {type(exc).__name__}: {exc}"}
