"""``edgeqc build`` and ``edgeqc info`` (thin argparse wiring; see :mod:`trt_build.pipeline` for
the steps and the exit codes)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, cast

from calibration.cli import _errors, add_calib_args, calib_settings
from calibration.cli_args import add_spec_args, model_settings


def cmd_build(args: argparse.Namespace) -> int:
    from calibration.accuracy_aware import SearchOptions
    from calibration.gate import GateThresholds
    from trt_build.builder import BuildOptions, EngineBuildError, OnnxParseError, Precision
    from trt_build.pipeline import EXIT_ERROR, BuildRequest, run_build
    from trt_build.profile import ProfileError

    if (args.model is None) == (args.from_int8 is None):
        print("edgeqc build: give either MODEL.onnx (FP32) or --from-int8 MODEL.int8.onnx", file=sys.stderr)
        return 2
    errors: tuple[type[BaseException], ...] = (*_errors(), EngineBuildError, OnnxParseError, ProfileError)
    try:
        ms, passes = model_settings(args)
        precision = cast(Precision, "int8" if args.from_int8 else args.precision)
        opts = BuildOptions(precision=precision, workspace_mib=args.workspace_mib, opt_batch=args.opt_batch,
                            max_batch=args.max_batch, timing_cache=Path(args.timing_cache) if args.timing_cache else None,
                            dla_core=args.dla_core, builder_optimization_level=args.opt_level, verbose=args.verbose)
        req = BuildRequest(
            model=Path(args.model) if args.model else None, out_dir=Path(args.out), model_settings=ms,
            pass_labels=passes, build_options=opts, calib=Path(args.calib) if args.calib else None,
            val=Path(args.val) if args.val else None, from_int8=Path(args.from_int8) if args.from_int8 else None,
            calib_settings=calib_settings(args) if args.calib else None, method=args.method,
            min_images=args.min_images, cache_dir=None if args.no_cache else Path(args.cache_dir),
            exclude=list(args.exclude), accuracy_aware=args.accuracy_aware,
            thresholds=GateThresholds(args.max_top1_drop, args.max_escape_rise),
            search=SearchOptions(max_float_layers=args.max_float_layers, max_trials=args.max_trials,
                                 min_per_class=args.min_per_class, seed=args.split_seed,
                                 proxy_images=args.proxy_images),
            threads=args.threads, progress=not args.no_progress, engine=not args.no_engine, json_out=args.json,
            force=args.force)
        return run_build(req)
    except errors as exc:
        print(f"edgeqc build: {exc}", file=sys.stderr)
        return EXIT_ERROR


def cmd_info(args: argparse.Namespace) -> int:
    """Exit 0: described (and, for an engine, it runs here or cannot be checked further); 1: not
    readable / unknown kind; 3 (:data:`trt_build.info.EXIT_NOT_RUNNABLE`): ``runs here: NO``."""
    from trt_build.info import EXIT_NOT_RUNNABLE, describe, format_info, not_runnable

    errors: tuple[type[BaseException], ...] = (*_errors(), OSError)
    try:
        d = describe(args.file)
    except errors as exc:
        print(f"edgeqc info: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(d, indent=2, default=str) if args.json else format_info(d))
    return EXIT_NOT_RUNNABLE if not_runnable(d) else 0


def register(subparsers: Any) -> None:
    """Add ``build`` and ``info`` to the ``edgeqc`` command line."""
    b = subparsers.add_parser(
        "build", help="calibrate -> INT8 Q/DQ -> accuracy gate -> TensorRT engine (+ sidecar)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build a TensorRT engine from an FP32 ONNX classifier: calibrate (cached), write the Q/DQ "
                    "model, evaluate FP32 vs INT8 on --val and refuse when the accuracy gate is missed, then build "
                    "the engine. Without TensorRT (any x86 box) it stops after the gated Q/DQ model.",
        epilog="exit codes: 0 done; 1 bad input or failed step; 2 usage/config error; 3 accuracy gate refused "
               "(numbers printed); 4 Q/DQ model ready but TensorRT missing here -> run\n"
               "  edgeqc build --from-int8 MODEL.int8.onnx --out DIR   on the target device.\n"
               "A refused model is written as MODEL.int8.refused.onnx; --from-int8 refuses a model whose "
               "edgeqc.gate metadata says refused (exit 3) unless --force.")
    b.add_argument("model", nargs="?", help="FP32 ONNX model")
    b.add_argument("--from-int8", metavar="MODEL.int8.onnx",
                   help="skip calibration and gate: build the engine from a Q/DQ model written by edgeqc "
                        "(refused when its edgeqc.gate metadata says the gate refused it, unless --force)")
    b.add_argument("--force", action="store_true",
                   help="--from-int8: build the engine even from a gate-refused model (knowingly)")
    b.add_argument("--out", required=True, metavar="DIR", help="output folder (Q/DQ model, report, engine)")
    b.add_argument("--val", metavar="DIR", help="labelled folder for the accuracy gate (DIR/<label>/<image>)")
    b.add_argument("--json", metavar="FILE", help="also write the build report JSON here ('-' = stdout)")
    add_calib_args(b)
    for a in b._actions:  # --calib is required for calibrate, optional here (--from-int8, fp16/fp32)
        if a.dest == "calib":
            a.required = False
    g = b.add_argument_group("accuracy gate")
    g.add_argument("--max-top1-drop", type=float, default=1.0, metavar="PP",
                   help="refuse when INT8 top-1 is more than PP percentage points below FP32 (default 1.0)")
    g.add_argument("--max-escape-rise", type=float, default=0.0, metavar="PP",
                   help="refuse when the defect escape rate rises more than PP points (default 0: no added escapes)")
    g.add_argument("--accuracy-aware", action="store_true",
                   help="if the gate refuses, keep the costliest layers in float until it passes (docs/build.md)")
    g.add_argument("--max-float-layers", type=int, default=8, help="accuracy-aware: most layers left in float (8)")
    g.add_argument("--max-trials", type=int, default=24, help="accuracy-aware: most candidates evaluated (24)")
    g.add_argument("--min-per-class", type=int, default=4,
                   help="accuracy-aware: fewer labelled images in a class cannot be split (default 4)")
    g.add_argument("--split-seed", type=int, default=0, help="accuracy-aware: seed of the stratified split")
    g.add_argument("--proxy-images", type=int, default=32, help="accuracy-aware: calibration images for the ranking")
    e = b.add_argument_group("engine (TensorRT, on the target device)")
    e.add_argument("--precision", choices=["int8", "fp16", "fp32"], default="int8",
                   help="int8 = Q/DQ strongly typed (default); fp16 needs TensorRT 10.x; fp32")
    e.add_argument("--workspace-mib", type=int, default=1024, help="workspace memory pool limit, MiB (1024)")
    e.add_argument("--opt-batch", type=int, default=1, help="profile: batch size to tune for (1)")
    e.add_argument("--max-batch", type=int, default=None, help="profile: largest batch (default 8; min is 1)")
    e.add_argument("--timing-cache", metavar="FILE", help="timing cache file, reused and updated across builds")
    e.add_argument("--dla-core", type=int, default=None, help="build for this DLA core with GPU fallback (Orin)")
    e.add_argument("--opt-level", type=int, default=None, help="builder optimization level 0-5 (TensorRT default 3)")
    e.add_argument("--verbose", action="store_true", help="show TensorRT INFO messages")
    e.add_argument("--no-engine", action="store_true", help="stop after the gated Q/DQ model (exit 0)")
    add_spec_args(b)
    b.set_defaults(func=cmd_build)

    i = subparsers.add_parser("info", help="what an engine, its sidecar or an ONNX model holds",
                              description="Print an ONNX model's I/O, model spec, Q/DQ check, INT8 share and "
                                          "accuracy gate outcome, or an engine's sidecar and whether it can run "
                                          "on this machine.",
                              epilog="exit codes: 0 described; 1 unreadable file or unknown kind; 3 engine "
                                     "cannot run here (runs here: NO: missing/malformed sidecar, missing plan, "
                                     "TensorRT/GPU/plan hash mismatch).")
    i.add_argument("file", help=".onnx, .engine/.plan, or <engine>.json")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=cmd_info)
