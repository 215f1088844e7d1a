#!/usr/bin/env python3
"""How much slower the PLC reader's handling of one ``TRG`` runs after an idle gap.

The measurement behind docs/performance.md "every part runs on a cold machine": the real
:class:`edge.plc.link.PlcLink` parses an encoded ``TRG`` and hands it to an ``on_trigger`` that
does what :meth:`edge.inspection.Inspector.on_trigger` does (a :class:`edge.parts.Part`, its
deadline in a :class:`edge.parts.PartTracker`, a ``queue.SimpleQueue`` put); timed back to back
and with ``--gap-ms`` of sleep before each call (a line at 20 parts/s idles ~40 ms between parts).

    tools/cold_path.py [--n 500] [--gap-ms 50]
"""

from __future__ import annotations

import argparse
import itertools
import queue
import time

import numpy as np

from edge.parts import Part, PartTracker
from edge.plc.link import PlcLink
from edge.plc.telegram import Trigger, encode_trigger
from edge.settings import load_settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500, help="calls per mode")
    ap.add_argument("--gap-ms", type=float, default=50.0, help="sleep before each call in the idle mode (ms)")
    args = ap.parse_args()
    tracker = PartTracker(lambda part: None)
    q: queue.SimpleQueue[Part] = queue.SimpleQueue()
    seq = itertools.count()

    def on_trigger(tel: Trigger, t: float) -> None:
        part = Part(next(seq), tel.part_id, t, time.time(), t + 0.25)
        tracker.register(part)
        q.put(part)

    link = PlcLink(load_settings().plc, on_trigger=on_trigger, port="loop://")  # not started: no port opened
    for name, gap in (("back to back", 0.0), (f"after {args.gap_ms:g} ms idle", args.gap_ms / 1000.0)):
        lat = []
        for i in range(args.n + 50):
            if gap:
                time.sleep(gap)
            data = encode_trigger(f"P{i:06d}")
            t = time.monotonic()
            link._handle(data, t)
            lat.append(1000.0 * (time.monotonic() - t))
            q.get()
        p50, p99 = np.percentile(lat[50:], [50, 99])
        print(f"{name:>22}: p50 {p50:.4f} ms, p99 {p99:.4f} ms ({args.n} calls)")
    tracker.close()


if __name__ == "__main__":
    main()
