"""``edgeqc review`` and ``edgeqc export-review`` (heavy imports inside the handlers)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _settings(args: argparse.Namespace) -> Any:
    from edge.settings import load_settings

    overrides: dict[str, Any] = {}
    review: dict[str, Any] = {}
    for name in ("host", "port", "db_path", "token"):
        v = getattr(args, name, None)
        if v is not None:
            review[name] = v
    if getattr(args, "station", None):
        review["stations"] = args.station
    if review:
        base = load_settings(args.config)
        overrides["review"] = {**base.review.model_dump(), **review}
    return load_settings(args.config, **overrides)


def cmd_review(args: argparse.Namespace) -> int:
    from edge.cli import setup_logging
    from edge.review.server import ReviewServer

    s = _settings(args)
    setup_logging(s.log_level)
    server = ReviewServer(s.review, s.decision.pass_classes, archive=args.archive)
    print(f"edgeqc review: {server.url}  (Ctrl+C to stop)", flush=True)
    server.serve()
    return 0


def cmd_export_review(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edge.review.export import ExportError, export_review
    from edge.review.store import ReviewStore, StoreError
    from edge.settings import ConfigError

    s = _settings(args)
    db = Path(s.review.db_path)
    if not db.is_file():
        raise ConfigError(f"review.db_path = {str(db)!r}: no review store there (run `edgeqc review` first)")
    pass_class = args.pass_class or s.decision.pass_classes[0]
    try:
        with ReviewStore(db, s.decision.pass_classes) as store:
            summary = export_review(store, args.dir, pass_class)
    except (ExportError, StoreError) as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:  # e.g. /proc/exp, a read-only disk: environment, exit 1
        print(f"edgeqc export-review: cannot write the export folder {args.dir!r}: "
              f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename and exc.filename != args.dir else "")
              + ": choose a writable new or empty folder", file=sys.stderr)
        return 1
    d = summary.to_dict()
    print(json.dumps(d, indent=2) if args.json else
          f"exported {d['total_images']} images in {len(d['images'])} classes to {d['out_dir']} "
          f"({d['rows']} verdicts in verdicts.csv, {d['missing_image']} without a frame): "
          + ", ".join(f"{k}={v}" for k, v in d["images"].items()))
    return 0


def register(subparsers: Any) -> None:
    """Add ``review`` and ``export-review`` to the ``edgeqc`` command line."""
    r = subparsers.add_parser("review", help="operator review page: live rejects, verdicts, station health")
    r.add_argument("--config", help="TOML settings file (EDGEQC_* env vars override it)")
    r.add_argument("--host", help="bind address (default review.host = 127.0.0.1; beyond loopback a token is required)")
    r.add_argument("--port", type=int, help="TCP port (default review.port = 8080; 0 = any free port)")
    r.add_argument("--station", action="append", metavar="ENDPOINT",
                   help="ZeroMQ endpoint of a station to follow, e.g. tcp://10.0.0.5:5556 (repeat; default review.stations)")
    r.add_argument("--db", dest="db_path", help="SQLite review store (default review.db_path)")
    r.add_argument("--token", help="login token (prefer EDGEQC_REVIEW__TOKEN: command lines are visible to other users)")
    r.add_argument("--archive", metavar="DIR", help="also import rejects from this reject-archive folder")
    r.set_defaults(func=cmd_review)

    e = subparsers.add_parser("export-review", help="write reviewed rejects as a labelled folder + verdicts.csv")
    e.add_argument("dir", help="output folder (new or empty): DIR/<class>/*.jpg and DIR/verdicts.csv")
    e.add_argument("--config", help="TOML settings file")
    e.add_argument("--db", dest="db_path", help="SQLite review store (default review.db_path)")
    e.add_argument("--pass-class", help="class folder for false rejects (default decision.pass_classes[0])")
    e.add_argument("--json", action="store_true", help="print the summary as JSON")
    e.set_defaults(func=cmd_export_review)
