"""``edgeqc plc-sim``: play the PLC against a running edgeqc (demo, commissioning a real line)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``plc-sim`` to the ``edgeqc`` argparse subparsers; the handler is ``args.func(args) -> int``."""
    p = subparsers.add_parser(
        "plc-sim",
        help="act as the PLC: send TRG telegrams, check every answer (EQC-ASCII/1)",
        description=(
            "Send TRG,<part_id> at a fixed rate over a serial port, verify every telegram the edge sends "
            "(checksum, exactly one RES per TRG, PONG per PING, NAK per garbage line) and print a report. "
            "Exit code 0 = all good, 1 = a part unanswered/late/duplicated/unexpected or a bad checksum or "
            "malformed answer, 2 = the port cannot be opened."
        ),
    )
    p.add_argument("--port", required=True, help="serial port (/dev/ttyUSB0) or pyserial URL (socket://host:port)")
    p.add_argument("--rate", type=float, default=5.0, help="triggers per second (default 5)")
    p.add_argument("--count", type=int, default=None,
                   help="triggers to send (default 100, or the number of --parts); 0 = listen only for --duration")
    p.add_argument("--parts", default=None, help="comma-separated part ids to send instead of P000001, P000002, ...")
    p.add_argument("--duration", type=float, default=None, help="listen-only run time in s (with --count 0)")
    p.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200)")
    p.add_argument("--bytesize", type=int, choices=(5, 6, 7, 8), default=8, help="data bits (default 8)")
    p.add_argument("--parity", choices=("N", "E", "O", "M", "S"), default="N", help="parity (default N)")
    p.add_argument("--stopbits", type=float, choices=(1, 1.5, 2), default=1, help="stop bits (default 1)")
    p.add_argument("--ping-every", type=int, default=0, help="send PING after every Nth trigger (default never)")
    p.add_argument("--garbage", action="store_true",
                   help="send one malformed line per NAK reason before the first triggers; expect one NAK each")
    p.add_argument("--no-checksum", action="store_true", help="send TRG/PING without the *HH suffix")
    p.add_argument("--timeout-ms", type=float, default=1000.0,
                   help="a RES later than this after its TRG counts as late (default 1000 ms)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the report as JSON to PATH")
    p.add_argument("--quiet", action="store_true", help="print only the final report")
    p.set_defaults(func=run_plc_sim)


def run_plc_sim(args: argparse.Namespace) -> int:
    """Handler of ``edgeqc plc-sim``; returns the exit code."""
    import serial

    from edge.plc.simulator import GARBAGE, PlcSimulator

    t0 = time.monotonic()

    def show(text: str) -> None:
        print(f"{time.monotonic() - t0:9.3f}  {text}", flush=True)

    parts = [x.strip() for x in args.parts.split(",") if x.strip()] if args.parts else None
    try:
        sim = PlcSimulator(
            args.port, args.rate, args.count, part_ids=parts, ping_every=args.ping_every,
            garbage=list(GARBAGE.values()) if args.garbage else (), checksum=not args.no_checksum,
            answer_timeout_ms=args.timeout_ms, duration_s=args.duration, on_event=None if args.quiet else show,
            baudrate=args.baud, bytesize=args.bytesize, parity=args.parity, stopbits=args.stopbits,
        )
    except ValueError as exc:
        print(f"edgeqc plc-sim: {exc}", file=sys.stderr)
        return 2
    try:
        report = sim.run()
    except (serial.SerialException, OSError, ValueError) as exc:
        print(f"edgeqc plc-sim: cannot open {args.port}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        report = sim.close()
        report.errors.append("interrupted")
    d = report.to_dict()
    lat = d["latency_ms"]
    print(f"\nplc-sim report for {args.port}: {'OK' if report.ok else 'FAILED'}")
    print(f"  triggers sent {report.triggers_sent}, answered in time {report.answered}, "
          f"missing {len(report.missing)}, late {len(report.late)}, duplicates {len(report.duplicates)}, "
          f"unexpected {len(report.unexpected)}")
    if lat["count"]:
        print(f"  latency TRG->RES ms: p50 {lat['p50']}, p95 {lat['p95']}, p99 {lat['p99']}, max {lat['max']}")
    print(f"  verdicts {report.verdicts}, fail-safe {report.failsafe}, free-run results {report.free_run_results}")
    print(f"  heartbeats {report.heartbeats} (OK {report.heartbeats_ok}, FAULT {report.heartbeats_fault}, "
          f"seq gaps {report.heartbeat_gaps}); PING/PONG {report.pings_sent}/{report.pongs}")
    print(f"  garbage sent {report.garbage_sent}, NAKs {report.naks}; bad checksum {report.bad_checksum}, "
          f"malformed {report.malformed}")
    for what in ("missing", "late", "duplicates", "unexpected", "malformed_examples", "errors"):
        items = d[what]
        if items:
            print(f"  {what}: {', '.join(map(str, items[:20]))}{' ...' if len(items) > 20 else ''}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(d, f, indent=2)
    return 0 if report.ok else 1
