"""``edgeqc`` command line: thin wiring, no logic of its own.

Each area registers its subcommands (``register(subparsers)``) and imports heavy modules lazily,
so ``edgeqc --help`` and the tools that do not need ONNX Runtime, OpenCV or TensorRT still start.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
from typing import Any

# Areas that add subcommands: module path -> exposes register(subparsers).
AREAS = (
    "edge.plc.cli",
    "calibration.cli",
    "trt_build.cli",
    "edge.review.cli",
    "edge.service_cli",
    "edge.bench",
)

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


_SYSLOG_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


class _JournalFormatter(logging.Formatter):
    """``LEVEL component [part=ID] message``: journald keeps the line; level and component are greppable.

    Under systemd (``JOURNAL_STREAM`` set) each line starts with ``<N>``, the syslog priority that
    journald parses from stdout/stderr (sd-daemon(3)), so ``journalctl -p warning`` filters by level.
    """

    def __init__(self) -> None:
        super().__init__()
        self.journal = bool(os.environ.get("JOURNAL_STREAM"))

    def format(self, record: logging.LogRecord) -> str:
        part = getattr(record, "part_id", None)
        comp = record.name.removeprefix("edgeqc.")
        head = f"{record.levelname} {comp}" + (f" part={part}" if part else "")
        if self.journal:
            head = f"<{_SYSLOG_PRIORITY.get(record.levelname, 6)}>{head}"
        msg = f"{head}: {record.getMessage()}"
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return msg


def setup_logging(level: str = "INFO") -> None:
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(_JournalFormatter())
    root = logging.getLogger()
    root.handlers[:] = [h]
    root.setLevel(level)


def _load(args: argparse.Namespace) -> Any:
    from edge.settings import load_settings

    return load_settings(getattr(args, "config", None))


def cmd_config_check(args: argparse.Namespace) -> int:
    from edge.settings import load_settings

    load_settings(args.file)
    print(f"{args.file}: OK")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from edge.settings import settings_to_toml

    s = _load(args)
    print(json.dumps(s.model_dump(mode="json"), indent=2) if args.json else settings_to_toml(s), end="")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edge.demo.run import run_station
    from edge.service import preflight

    s = _load(args)
    setup_logging(s.log_level)
    problems = preflight(s, unit_path=None)
    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        print(f"edgeqc preflight: {p}", file=sys.stderr)
    if errors and not args.skip_preflight:
        # A config that contradicts the model cannot be fixed by a restart: exit 2 (no restart loop).
        config_like = any(p.field in ("decision", "model", "model.backend") for p in errors)
        return EXIT_CONFIG if config_like else EXIT_RUNTIME
    return run_station(s, json_out=args.json, parts=None, until_signal=True, config=args.config)


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.demo.run import demo_settings, run_station

    s = demo_settings(args.config)
    setup_logging(s.log_level)
    return run_station(s, json_out=args.json, parts=args.parts, rate_hz=args.rate, until_signal=False)


def _positive(kind: type[int | float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return v

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeqc", description="Edge inference for factory quality control.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run the inspection loop until SIGINT/SIGTERM")
    r.add_argument("--config", help="TOML settings file (EDGEQC_* env vars override it)")
    r.add_argument("--json", help="write the run summary as JSON to this file")
    r.add_argument("--skip-preflight", action="store_true", help="start even if the preflight check finds errors")
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="the whole chain with no hardware: synthetic parts, demo model, PLC simulator")
    d.add_argument("--config", help="optional TOML overriding the demo defaults")
    d.add_argument("--parts", type=_positive(int), default=None, help="number of triggers (default: one per demo image)")
    d.add_argument("--rate", type=_positive(float), default=10.0, help="trigger rate of the PLC simulator, parts/s")
    d.add_argument("--json", help="write the run summary as JSON to this file")
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser("config", help="validate or print the settings")
    csub = c.add_subparsers(dest="config_command", required=True)
    cc = csub.add_parser("check", help="validate a TOML settings file without running")
    cc.add_argument("file")
    cc.set_defaults(func=cmd_config_check)
    cs = csub.add_parser("show", help="print the effective settings (file + env + defaults)")
    cs.add_argument("--config")
    cs.add_argument("--json", action="store_true")
    cs.set_defaults(func=cmd_config_show)

    for mod in AREAS:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name == mod:  # area not built yet
                continue
            raise
        m.register(sub)
    return p


def _startup_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """Errors that stop a start with one clear line instead of a traceback.

    Configuration-like errors exit 2 (the unit's ``RestartPreventExitStatus=2``: a restart cannot
    fix them); environment errors (camera, port, model file, backend) exit 1 so systemd retries.
    """
    from edge.backends import BackendError
    from edge.capture import CaptureError
    from edge.decision import DecisionError
    from edge.model_spec import ModelSpecError
    from edge.onnx_info import OnnxReadError
    from edge.preprocess import PreprocessError
    from edge.settings import ConfigError

    return ((ConfigError, DecisionError, ModelSpecError, PreprocessError),
            (CaptureError, BackendError, OnnxReadError, OSError))


def main(argv: list[str] | None = None) -> int:
    # A SIGHUP before the run loop installs its reload handler must not kill a starting service.
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    args = build_parser().parse_args(argv)
    config_errors, env_errors = _startup_errors()
    try:
        return int(args.func(args) or 0)
    except config_errors as exc:
        print(f"edgeqc: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except env_errors as exc:
        print(f"edgeqc: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
