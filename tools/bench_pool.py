#!/usr/bin/env python3
"""Item 2 of several ``edgeqc bench --json`` runs pooled: trigger -> RES p99 vs bare p99.

Usage: tools/bench_pool.py run1.json run2.json ...   (project venv: uses edge.bench.measure)

Why: on these guests one run's p99 difference has a 90 % bootstrap interval about +-4 ms wide
(a p99 from 6 000 samples sits in the tail of host stalls), wider than the 3-ms margin of the
target. Each run measures both sides in the same minutes (alternating blocks, equal counts), so
pooling the runs' samples keeps the pairing and narrows the interval about as 1/sqrt(runs).
Runs from before the bench kept its samples (``item2_trigger.samples_ms``) are skipped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edge.bench.measure import percentile, percentile_difference_ci


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    pooled: dict[str, list[float]] = {"trigger_to_res": [], "trigger_to_res_written": [], "bare_paced": []}
    used = []
    for arg in argv:
        run = json.loads(Path(arg).read_text(encoding="utf-8"))
        samples = (run.get("item2_trigger") or {}).get("samples_ms")
        if not samples:
            print(f"{arg}: no item2_trigger.samples_ms (older bench or --quick without item 2): skipped", file=sys.stderr)
            continue
        used.append(f"{arg} ({len(samples['trigger_to_res'])} parts)")
        for k, xs in pooled.items():
            xs.extend(samples.get(k) or [])
    if not used:
        return 1
    bare = pooled["bare_paced"]
    print(f"pooled: {', '.join(used)}")
    print(f"bare paced p99 {percentile(bare, 99):.2f} ms ({len(bare)} calls)")
    for k, what in (("trigger_to_res", "trigger -> RES read by the PLC"),
                    ("trigger_to_res_written", "trigger -> RES written by the station")):
        xs = pooled[k]
        if not xs:
            continue
        d = percentile_difference_ci(xs, bare)
        lo, hi = d["ci"]
        print(f"{what}: p99 {percentile(xs, 99):.2f} ms ({len(xs)} parts), difference {d['value']:+.2f} ms, "
              f"90 % bootstrap interval {lo:+.2f} .. {hi:+.2f} ms (target <= +3 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
