"""``edgeqc calibrate`` and ``edgeqc evaluate`` (thin: argparse wiring; the work is in the library).

Exit codes: 0 done; 1 bad input or failure (the message says which file/field/value); 2 usage
or configuration error (argparse / ``edge.cli``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from calibration.cli_args import add_spec_args, model_settings

EXIT_OK = 0
EXIT_ERROR = 1


def _errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are bad input / expected failures: printed as one message, exit 1."""
    from calibration.calibrate import CalibrationError
    from calibration.dataset import DatasetError
    from calibration.qdq_check import QdqGraphError
    from calibration.search import SplitError
    from edge.model_spec import ModelSpecError
    from edge.onnx_info import OnnxReadError

    return (CalibrationError, DatasetError, QdqGraphError, SplitError, ModelSpecError, OnnxReadError,
            FileNotFoundError, NotADirectoryError, RuntimeError, ValueError)


def add_calib_args(p: argparse.ArgumentParser) -> None:
    """Calibration flags shared with ``edgeqc build``."""
    g = p.add_argument_group("calibration")
    g.add_argument("--calib", required=True, metavar="DIR", help="calibration image folder (recursive)")
    g.add_argument("--method", default="minmax",
                   choices=["minmax", "entropy", "percentile", "modelopt-entropy", "modelopt-max"],
                   help="range calibration method (default minmax; modelopt-* need NVIDIA ModelOpt installed)")
    g.add_argument("--calib-images", type=int, metavar="N", help="use at most N usable images, evenly spread")
    g.add_argument("--min-images", type=int, default=100, metavar="N",
                   help="fewer usable calibration images is an error (default 100)")
    g.add_argument("--percentile", type=float, default=99.999, help="percentile method: %% of |x| kept (99.999)")
    g.add_argument("--chunk-images", type=int, default=16, metavar="N",
                   help="images per calibrator merge; bounds entropy/percentile memory (default 16)")
    g.add_argument("--batch", type=int, default=1,
                   help="images per calibration inference call (default 1; 8 is ~10 %% faster, +0.8 GB)")
    g.add_argument("--exclude", nargs="+", default=[], metavar="NODE", help="ONNX node names kept in float")
    g.add_argument("--cache-dir", default=".edgeqc-cache", help="calibration range cache (default .edgeqc-cache)")
    g.add_argument("--no-cache", action="store_true", help="always recalibrate; do not read or write the cache")
    g.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = all cores)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def calib_settings(args: argparse.Namespace) -> Any:
    from calibration.ranges import CalibSettings

    method = args.method if not args.method.startswith("modelopt-") else "minmax"
    return CalibSettings(method=method, max_images=args.calib_images, chunk_images=args.chunk_images,
                         batch=args.batch, percentile=args.percentile)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from calibration.cache import RangeCache, write_json_atomic
    from calibration.calibrate import (
        calibration_report,
        prepare_ranges,
        quantize_with_modelopt,
        write_qdq_model,
    )
    from edge.model_spec import resolve_spec

    try:
        ms, _ = model_settings(args)
        spec = resolve_spec(args.model, ms)
        out = Path(args.out or (Path(args.model).stem + ".int8.onnx"))
        progress = not args.no_progress
        if args.method.startswith("modelopt-"):
            ranges, qdq = quantize_with_modelopt(args.model, args.calib, out, spec, args.method,
                                                 max_images=args.calib_images, min_images=args.min_images,
                                                 exclude=args.exclude, progress=progress)
        else:
            cache = RangeCache(None if args.no_cache else Path(args.cache_dir))
            ranges = prepare_ranges(args.model, args.calib, spec, calib_settings(args), min_images=args.min_images,
                                    cache=cache, progress=progress)
            try:
                qdq = write_qdq_model(args.model, ranges, out, spec, exclude=args.exclude)
            finally:
                ranges.close()
        report = calibration_report(args.model, ranges, qdq, spec, min_images=args.min_images)
        report_path = Path(args.report) if args.report else out.with_name(out.name.removesuffix(".onnx") + ".report.json")
        write_json_atomic(report_path, report)
    except _errors() as exc:
        print(f"edgeqc calibrate: {exc}", file=sys.stderr)
        return EXIT_ERROR
    st = qdq.stats
    print(f"calibration set {ranges.calib_root}: {len(ranges.used)} images used, {len(ranges.skipped)} unreadable "
          f"skipped (of {ranges.found}); method {ranges.method}; "
          + ("ranges from cache (no calibration run)" if ranges.cache_hit else f"calibrated in {ranges.seconds:.1f} s"))
    print(f"Q/DQ model {qdq.path} ({qdq.path.stat().st_size / 1e6:.2f} MB): graph check OK "
          f"({qdq.check.quantize_nodes} Q, {qdq.check.dequantize_nodes} DQ, {qdq.check.weights_checked} weights "
          f"per-channel int8); {len(st.layers) - len(st.float_layers)}/{len(st.layers)} compute layers INT8, "
          f"{100 * st.int8_mac_share:.1f} % of MACs")
    print(f"report {report_path}")
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from calibration.evaluate import evaluate_folder, write_json
    from edge.model_spec import resolve_spec

    models: list[tuple[str, str]] = []
    if args.fp32:
        models.append(("FP32", args.fp32))
    if args.int8:
        models.append(("INT8", args.int8))
    for item in args.model or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            print(f"edgeqc evaluate: --model {item!r}, expected NAME=PATH", file=sys.stderr)
            return 2
        models.append((name, path))
    if not models:
        print("edgeqc evaluate: give at least one model (--fp32, --int8 or --model NAME=PATH)", file=sys.stderr)
        return 2
    try:
        ms, passes = model_settings(args)
        spec_source = args.int8 or models[0][1]
        spec = resolve_spec(spec_source, ms)
        ev = evaluate_folder(models, args.val, spec, passes, batch=args.batch, threads=args.threads,
                             progress=not args.no_progress)
    except _errors() as exc:
        print(f"edgeqc evaluate: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        write_json(ev.to_dict() | {"model_spec_from": str(spec_source)}, args.json)
    if args.json != "-":
        print(f"model spec (from {spec_source}): {spec.describe()}")
        print(ev.format_table())
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``calibrate`` and ``evaluate`` to the ``edgeqc`` command line."""
    c = subparsers.add_parser(
        "calibrate", help="calibration set -> INT8 Q/DQ ONNX model (+ JSON report)",
        description="Compute activation ranges on a calibration set (cached), write a TensorRT-valid Q/DQ ONNX "
                    "model carrying the model spec, check its graph, and write a JSON report.")
    c.add_argument("model", help="FP32 ONNX model")
    c.add_argument("--out", help="Q/DQ model to write (default ./<model name>.int8.onnx)")
    c.add_argument("--report", help="JSON report (default <out without .onnx>.report.json)")
    add_calib_args(c)
    add_spec_args(c)
    c.set_defaults(func=cmd_calibrate)

    e = subparsers.add_parser(
        "evaluate", help="FP32 vs INT8 on a labelled folder: top-1, recall, confusion, escapes, false rejects",
        description="Run models through ONNX Runtime on a labelled folder (one subfolder per class, named like "
                    "the model's labels) and print top-1, per-class recall, confusion matrices, agreement, defect "
                    "escape rate and false reject rate side by side.")
    e.add_argument("--val", required=True, metavar="DIR", help="labelled folder: DIR/<label>/<image>")
    e.add_argument("--fp32", metavar="MODEL", help="FP32 ONNX model")
    e.add_argument("--int8", metavar="MODEL", help="INT8 Q/DQ ONNX model (its metadata gives the model spec)")
    e.add_argument("--model", action="append", metavar="NAME=PATH", help="further models to compare")
    e.add_argument("--json", metavar="FILE", help="also write the results as JSON ('-' = stdout only)")
    e.add_argument("--batch", type=int, default=16, help="images per inference call (default 16)")
    e.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = all cores)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_spec_args(e)
    e.set_defaults(func=cmd_evaluate)
