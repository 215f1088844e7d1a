"""FP32 vs INT8 Q/DQ on the CPU (item 3): latency interleaved, accuracy on the labelled folder.

The INT8 model is, in this order: ``--int8 PATH``; the ``<name>.int8.onnx`` beside the model
(``edgeqc calibrate`` / ``edgeqc build`` output, which passed the build's accuracy gate); or one
the bench makes itself with the calibration package (ONNX Runtime ``quantize_static``, MinMax,
``calib_images`` images of the calibration set) into ``<cache>/bench/`` and reuses on the next
run. The last one has *not* been through the build's accuracy gate or its accuracy-aware layer
search: its accuracy is what plain MinMax Q/DQ gives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.bench.bare import BareSession
from edge.bench.measure import median, summary
from edge.bench.setup import BenchSetup
from edge.model_spec import ModelSpec

log = logging.getLogger("edgeqc.bench")


def find_or_make_int8(setup: BenchSetup, spec: ModelSpec, calib_images: int) -> tuple[Path | None, str]:
    """The INT8 model to compare and where it came from (None + why when there is none)."""
    from edge.backends.select import int8_sibling

    if setup.int8 is not None:  # checked by resolve_setup: exists, readable, Q/DQ
        return setup.int8, "given with --int8"
    sib = int8_sibling(setup.model)
    if sib is not None:
        return sib, "the .int8.onnx beside the model (edgeqc calibrate/build output)"
    if setup.calib is None:
        return None, "no INT8 model beside the model and no calibration set (--int8 PATH or --calib DIR)"
    from calibration.cache import RangeCache
    from calibration.calibrate import prepare_ranges, write_qdq_model
    from calibration.dataset import scan_images
    from calibration.ranges import CalibSettings
    from edge.onnx_info import file_sha256

    calib = scan_images(setup.calib)
    out = (setup.cache_dir / "bench" /
           f"{setup.model.stem}-{file_sha256(setup.model)[:12]}-{calib.sha256[:12]}-minmax{calib_images}.int8.onnx")
    how = (f"made by the bench: ONNX Runtime quantize_static MinMax Q/DQ on {calib_images} images of "
           f"{setup.calib} (no accuracy gate, no layer search)")
    if out.is_file():
        return out, how + f"; reused {out}"
    n = min(calib_images, len(calib.files))
    ranges = prepare_ranges(setup.model, setup.calib, spec, CalibSettings(method="minmax", max_images=n),
                            min_images=n, cache=RangeCache(setup.cache_dir / "ranges"))
    try:
        write_qdq_model(setup.model, ranges, out, spec)
    finally:
        ranges.close()
    return out, how + f"; written to {out}"


def precision_item(setup: BenchSetup, spec: ModelSpec, tensors: Sequence[np.ndarray], *, rounds: int, runs: int,
                   threads_note: str) -> dict[str, Any]:
    """Latency (batch 1, interleaved rounds, same tensors and threads) and accuracy of FP32 vs INT8."""
    from edge.backends.select import TIE_MARGIN

    int8, origin = find_or_make_int8(setup, spec, setup.sizes.calib_images)
    out: dict[str, Any] = {"int8_model": str(int8) if int8 else None, "int8_origin": origin, "threads": threads_note}
    if int8 is None:
        out["skipped"] = origin
        return out
    sessions = {"fp32": BareSession(setup.model, setup.settings.model, spec),
                "int8": BareSession(int8, setup.settings.model, spec)}
    for sess in sessions.values():
        sess.warm(tensors)
    lat: dict[str, list[float]] = {k: [] for k in sessions}
    per_round: list[float] = []
    for r in range(rounds):
        order = list(sessions) if r % 2 == 0 else list(reversed(sessions))
        meds = {}
        for name in order:
            t = sessions[name].tight(tensors, runs, start=r * runs)
            lat[name].extend(t.latencies_ms)
            meds[name] = median(t.latencies_ms) or 0.0
        per_round.append(meds["int8"] / meds["fp32"] if meds["fp32"] else float("nan"))
    out["latency_ms"] = {k: summary(v) for k, v in lat.items()}
    out["int8_over_fp32_latency"] = round(float(np.median(per_round)), 3)
    m = {k: median(v) or 0.0 for k, v in lat.items()}
    out["cpu_choice"] = "int8" if m["int8"] < (1.0 - TIE_MARGIN) * m["fp32"] else "fp32"
    if setup.labelled:
        from calibration.evaluate import evaluate_folder

        ev = evaluate_folder([("FP32", setup.model), ("INT8", int8)], setup.images, spec,
                             setup.settings.decision.pass_classes, batch=8,
                             threads=int(setup.settings.model.intra_op_threads))
        acc: dict[str, Any] = {}
        for res in ev.models:
            mt = res.metrics
            acc[res.name.lower()] = {"images": mt.images, "top1": round(mt.top1, 2), "correct": mt.correct,
                                     "escapes": mt.escapes, "defective": mt.defective,
                                     "false_rejects": mt.false_rejects, "good": mt.good}
        acc["agreement"] = round(ev.agreement(1, 0), 2)
        acc["top1_drop_pp"] = round(acc["fp32"]["top1"] - acc["int8"]["top1"], 2)
        out["accuracy"] = acc
    else:
        out["accuracy"] = None
        out["accuracy_note"] = f"{setup.images} has no class subfolders named like the labels: accuracy not measured"
    return out
