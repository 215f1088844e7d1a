"""``edgeqc bench``: the runtime's overhead over the bare model, measured side by side (targets and method: docs/performance.md).

Prints a table and writes JSON. Every ratio comes from figures taken in the same run, in
alternating blocks, so they hold on a loaded machine. Items (docs/performance.md):

1. bare ONNX Runtime on pre-made tensors vs the full free-run pipeline on the same images;
2. trigger -> ``RES`` latency over a serial pty at ``--rate`` vs bare inference at that rate;
3. FP32 vs INT8 Q/DQ on the CPU: latency and accuracy on the labelled folder;
4. per-stage breakdown (capture, preprocess, infer, decide, PLC, publish, archive, metrics);
5. pipeline overhead per frame with the no-op backend (JPEG decode reported apart);
6. peak RSS and RSS growth over the trigger run (``--duration 600`` = 10-minute soak).

Exit status: 0 when it ran (whatever the targets say); 1 on a failure, or when the results could
not be written to --json (they go to bench-<time>.json in the current folder or the temp folder
then, and the message says where); 2 on bad arguments (checked before anything runs, --json
included); 130 on Ctrl-C; 143 on SIGTERM. The work folder is removed in every case.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class _Terminated(BaseException):
    """SIGTERM during the run (a BaseException: ``except Exception`` in the items lets it through)."""


def check_json_target(path: Path) -> str | None:
    """Why ``path`` cannot take the JSON (None when it can), checked before the run.

    Makes the parent folders (as the write at the end would) and opens the file for append; a
    file that did not exist before is removed again.
    """
    if path.is_dir():
        return "it is a folder; give a file name"
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        return f"{above} is a file, not a folder"
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    if not existed:
        path.unlink(missing_ok=True)
    return None


def write_json(result: dict[str, Any], out: Path) -> tuple[Path, str | None]:
    """Write ``result`` to ``out``; if that fails, to ``bench-<time>.json`` in the current folder,
    else in :func:`tempfile.gettempdir`. Returns (the file written, why ``out`` failed or None).

    Raises:
        OSError: no place could be written.
    """
    import tempfile
    import time

    text = json.dumps(result, indent=2, default=str) + "\n"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        return out, None
    except OSError as exc:
        why = exc.strerror or str(exc)
    name = f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    last: OSError | None = None
    for folder in (Path.cwd(), Path(tempfile.gettempdir())):
        try:
            fallback = folder / name
            fallback.write_text(text, encoding="utf-8")
            return fallback, why
        except OSError as exc:
            last = exc
    assert last is not None
    raise last


def cmd_bench(args: argparse.Namespace) -> int:
    from edge.bench.setup import BenchSetupError, resolve_setup
    from edge.model_spec import ModelSpecError

    out = Path(args.json)
    why = check_json_target(out)
    if why:
        print(f"edgeqc bench: --json {out}: cannot write the results there ({why})", file=sys.stderr)
        return EXIT_USAGE
    try:
        setup = resolve_setup(model=args.model, images=args.images, config=args.config, quick=args.quick,
                              duration=args.duration, rate=args.rate, threads=args.threads, int8=args.int8,
                              calib=args.calib, pass_classes=args.pass_class, cache_dir=args.cache_dir)
    except (BenchSetupError, ModelSpecError) as exc:
        print(f"edgeqc bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from edge.bench.report import format_table
    from edge.bench.run import run_bench

    def say(msg: str) -> None:
        if not args.no_progress:
            print(f"bench: {msg}", file=sys.stderr, flush=True)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise _Terminated

    import shutil
    import signal

    installed = False
    try:
        old_term = signal.signal(signal.SIGTERM, on_sigterm)
        installed = True
    except ValueError:  # not the main thread: no handler, the caller owns the signals
        old_term = None
    try:
        for note in setup.notes:
            say(note)
        result = run_bench(setup, argv=_command(args), progress=say)
    except _Terminated:
        print("edgeqc bench: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("edgeqc bench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the message says which step and why; the traceback goes to the log
        import logging

        logging.getLogger("edgeqc.bench").debug("bench failed", exc_info=True)
        print(f"edgeqc bench: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if installed:
            signal.signal(signal.SIGTERM, old_term if old_term is not None else signal.SIG_DFL)
        shutil.rmtree(setup.workdir, ignore_errors=True)
    print(format_table(result), flush=True)
    try:
        written, failed = write_json(result, out)
    except OSError as exc:
        print(f"edgeqc bench: --json {out}: could not write the results, nor a fallback file "
              f"({exc.strerror or exc})", file=sys.stderr)
        return EXIT_ERROR
    if failed:
        print(f"edgeqc bench: --json {out}: could not write the results ({failed}); wrote them to {written}",
              file=sys.stderr)
        return EXIT_ERROR
    print(f"\nJSON: {written}")
    return EXIT_OK


def _command(args: argparse.Namespace) -> list[str]:
    """The options given, as a command line (for the JSON)."""
    out: list[str] = []
    for name in ("model", "images", "config", "duration", "rate", "threads", "int8", "calib", "cache_dir", "json"):
        v = getattr(args, name, None)
        if v is not None and not (name == "cache_dir" and v == ".edgeqc-cache"):
            out += [f"--{name.replace('_', '-')}", str(v)]
    for v in args.pass_class or []:
        out += ["--pass-class", v]
    if args.quick:
        out.append("--quick")
    return out


def register(subparsers: Any) -> None:
    """Add ``edgeqc bench`` to the ``edgeqc`` CLI."""
    p = subparsers.add_parser(
        "bench", help="measure the runtime against the bare model (throughput, trigger latency, INT8, RSS)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="ONNX model (default: ../shared mt-effnet-lite0, else the demo model)")
    p.add_argument("--images", help="image folder; class subfolders = labels for accuracy "
                                    "(default: ../shared val set, else rendered demo parts)")
    p.add_argument("--config", help="TOML settings for model spec, decision and threads (other sections are "
                                    "replaced by bench values)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a correctness run (seconds), not a measurement")
    p.add_argument("--duration", type=float, help="trigger-mode run in s (default 60; 600 = the 10-minute soak)")
    p.add_argument("--rate", type=float, help="trigger rate in parts/s (default 20)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads for every session (default: "
                                               "model.intra_op_threads; 0 = auto, one core fewer than usable, 1..4)")
    p.add_argument("--int8", help="INT8 Q/DQ model for item 3 (default: <model>.int8.onnx beside the model, else "
                                  "made from --calib)")
    p.add_argument("--calib", help="calibration images if the bench has to make the INT8 model (default: the "
                                   "shared calib set for the shared model)")
    p.add_argument("--pass-class", action="append", metavar="LABEL",
                   help="pass class (repeatable; default from --config, 'free' for the shared model)")
    p.add_argument("--cache-dir", default=".edgeqc-cache", help="where a bench-made INT8 model is kept")
    p.add_argument("--json", default="bench.json", help="JSON output file (default bench.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_bench)
