#!/usr/bin/env python3
"""Items 1 and 2 of several ``edgeqc bench --json`` runs pooled: pipeline/bare throughput ratio
(median of all rounds) and trigger -> RES p99 vs bare p99, each with a 90 % bootstrap interval.

Usage: .venv/bin/python tools/bench_pool.py run1.json run2.json ...   (imports edge.bench.measure)

Why: on these guests one run's p99 difference has a 90 % bootstrap interval about +-4 ms wide
(a p99 from 6 000 samples sits in the tail of host stalls), wider than the 3-ms margin of the
target. Each run measures both sides in the same minutes (alternating blocks, equal counts), so
pooling the runs' samples keeps the pairing and narrows the interval about as 1/sqrt(runs).
Item 1 likewise: one round's ratio scatters by 15-20 % here, so the rounds of several runs
(``item1_bare_vs_pipeline.throughput_ratio_per_round``, steady-state rounds since session 7) are
pooled and their median taken.
Skipped, with a line on stderr: runs from before the bench kept its samples
(``item2_trigger.samples_ms``), ``--quick`` runs (a correctness run, not a measurement) and the
same run given twice, or samples that are not numbers. Exit status: 0 pooled, 1 nothing to pool,
2 a file that cannot be read or is not a JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

try:
    from edge.bench.measure import median_ci, percentile, percentile_difference_ci
except ImportError as exc:  # run with a Python that has edgeqc installed
    sys.exit(f"bench_pool: {exc}: run it with the project's Python, e.g. .venv/bin/python tools/bench_pool.py")


def _fail(msg: str) -> None:
    print(f"bench_pool: {msg}", file=sys.stderr)
    sys.exit(2)


def _load(arg: str) -> dict[str, Any]:
    """The bench JSON at ``arg``; exit 2 with one line when it is not one."""
    run: Any = None
    try:
        run = json.loads(Path(arg).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{arg}: cannot read: {getattr(exc, 'strerror', None) or exc}")
    except json.JSONDecodeError as exc:
        _fail(f"{arg}: not JSON ({exc})")
    if not isinstance(run, dict):
        _fail(f"{arg}: not an edgeqc bench JSON (top level is {type(run).__name__}, expected an object)")
    return run  # type: ignore[no-any-return]


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    pooled: dict[str, list[float]] = {"trigger_to_res": [], "trigger_to_res_written": [], "bare_paced": []}
    used = []
    ratios: list[float] = []
    seen: dict[tuple[Any, Any], str] = {}
    for arg in argv:
        run = _load(arg)
        samples = (run.get("item2_trigger") or {}).get("samples_ms")
        i1 = run.get("item1_bare_vs_pipeline") or {}
        # steady-state rounds only (the runs that report an interval); older rounds included the fill
        rounds = i1.get("throughput_ratio_per_round") if "throughput_ratio_ci90" in i1 else None
        if not isinstance(rounds, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                   for x in rounds):
            rounds = None
        if not isinstance(samples, dict) or not samples.get("trigger_to_res"):
            if rounds is None:
                print(f"{arg}: no item2_trigger.samples_ms nor steady-state item 1 rounds (not a bench JSON, "
                      "or from before session 6): skipped", file=sys.stderr)
                continue
            samples = {}
        if (run.get("sizes") or {}).get("quick"):
            print(f"{arg}: a --quick run (a correctness run, not a measurement): skipped", file=sys.stderr)
            continue
        key = (run.get("started"), run.get("command"))
        if key in seen:
            print(f"{arg}: the same run as {seen[key]} (started {key[0]}): skipped", file=sys.stderr)
            continue
        bad = [k for k in pooled if not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                            for x in samples.get(k) or [])]
        if bad:
            print(f"{arg}: item2_trigger.samples_ms.{bad[0]} holds something that is not a number: skipped",
                  file=sys.stderr)
            continue
        seen[key] = arg
        used.append(f"{arg} ({len(samples.get('trigger_to_res') or [])} parts, {len(rounds or [])} item-1 rounds)")
        for k, xs in pooled.items():
            xs.extend(samples.get(k) or [])
        ratios.extend(rounds or [])
    if not used:
        print("bench_pool: nothing to pool", file=sys.stderr)
        return 1
    print(f"pooled: {', '.join(used)}")
    if ratios:
        lo, hi = median_ci(ratios)
        print(f"item 1 pipeline/bare throughput: median {statistics.median(ratios):.3f} of {len(ratios)} rounds, "
              f"90 % bootstrap interval {lo:.3f} .. {hi:.3f} (target >= 0.95)")
    bare = pooled["bare_paced"]
    if not bare:
        print("bench_pool: no item-2 bare samples in these runs: no p99 to compare", file=sys.stderr)
        return 0 if ratios else 1
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
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:  # `... | head`: the reader left; nothing more to say
        sys.stderr.close()
        sys.exit(0)
