#!/usr/bin/env python3
"""Markdown results table for BENCHMARKS.md from ``edgeqc bench --json`` files, one column each.

Usage: tools/bench_table.py NAME=run.json [NAME=run.json ...]   (stdlib only)
"""

from __future__ import annotations

import json
import sys
from typing import Any


def g(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def pct(d: Any) -> str:
    return "—" if not d else f"{d['p50']} / **{d['p99']}** / {d['max']}"


def accuracy(a: dict[str, Any]) -> str:
    return (f"{a['fp32']['top1']} % → {a['int8']['top1']} % ({a['fp32']['escapes']}→{a['int8']['escapes']}"
            f"/{a['int8']['defective']}, {a['fp32']['false_rejects']}→{a['int8']['false_rejects']}/{a['int8']['good']})")


def rss(m: dict[str, Any]) -> str:
    return (f"{m['start_mib']} → {m['end_mib']} MiB, {m['growth_mib']} MiB over {m['duration_s']} s, "
            f"{m['slope_mib_per_min']} MiB/min")


ROWS: list[tuple[str, Any]] = [
    ("command", lambda r: f"`{r['command']}`"),
    ("load average (1 min) start → end", lambda r: f"{r['load_average_start'][0]} → {r['load_average_end'][0]}"),
    ("wall time of the bench", lambda r: f"{r['seconds']} s"),
    ("ONNX Runtime intra-op threads (every session)", lambda r: g(r, "threads", "intra_op_threads")),
    ("1 rounds x frames a side", lambda r: f"{g(r, 'item1_bare_vs_pipeline', 'pipeline', 'rounds')} x "
                                           f"{g(r, 'item1_bare_vs_pipeline', 'pipeline', 'frames_per_round')}"),
    ("1 bare ORT ms/frame (median of rounds; steady state, session 7 on)",
     lambda r: g(r, "item1_bare_vs_pipeline", "bare", "steady_ms_per_frame_median")
     or g(r, "item1_bare_vs_pipeline", "bare", "ms_per_frame_median")),
    ("1 pipeline ms/frame (median of rounds; steady state, session 7 on)",
     lambda r: g(r, "item1_bare_vs_pipeline", "pipeline", "steady_ms_per_frame_median")
     or g(r, "item1_bare_vs_pipeline", "pipeline", "ms_per_frame_median")),
    ("1 **throughput ratio pipeline/bare** (median of per-round ratios)",
     lambda r: f"**{g(r, 'item1_bare_vs_pipeline', 'throughput_ratio')}**"),
    ("1 ratio, 90 % bootstrap interval (session 7 on)",
     lambda r: " .. ".join(str(x) for x in g(r, "item1_bare_vs_pipeline", "throughput_ratio_ci90") or ["-"])),
    ("1 whole blocks summed (ratio of totals); CPU-time ratio (bare CPU ÷ pipeline CPU per frame)",
     lambda r: f"{g(r, 'item1_bare_vs_pipeline', 'throughput_ratio_of_totals')}; "
               f"{g(r, 'item1_bare_vs_pipeline', 'cpu_efficiency_ratio')}"),
    ("2 **trigger→RES** p50 / p99 / max (ms)", lambda r: pct(g(r, "item2_trigger", "trigger_to_res_ms"))),
    ("2 trigger→RES written by the station p50 / p99 / max (ms) (session 6 on)",
     lambda r: pct(g(r, "item2_trigger", "trigger_to_res_written_ms")) if g(r, "item2_trigger", "trigger_to_res_written_ms") else "—"),
    ("2 bare paced p50 / p99 / max (ms), counting waits behind a stalled call", lambda r: pct(g(r, "item2_trigger", "bare_paced_ms"))),
    ("2 bare paced, the call alone (before session 5: the reference)",
     lambda r: pct(g(r, "item2_trigger", "bare_paced_call_ms")) if g(r, "item2_trigger", "bare_paced_call_ms") else "—"),
    ("2 samples each (trigger; bare)", lambda r: f"{g(r, 'item2_trigger', 'trigger_to_res_ms', 'count')}; "
                                                 f"{g(r, 'item2_trigger', 'bare_paced_ms', 'count')}"),
    ("2 **p99 difference** (target ≤ +3 ms)",
     lambda r: f"**{round(g(r, 'item2_trigger', 'trigger_to_res_ms', 'p99') - g(r, 'item2_trigger', 'bare_paced_ms', 'p99'), 1):+} ms**"),
    ("2 p99 difference, 90 % bootstrap interval (ms)",
     lambda r: "—" if not g(r, "item2_trigger", "p99_difference_ms", "ci")
     else " .. ".join(f"{v:+.1f}" for v in g(r, "item2_trigger", "p99_difference_ms", "ci"))),
    ("2 p99 difference to the RES written (station's clock)",
     lambda r: "—" if g(r, "item2_trigger", "p99_difference_written_ms", "value") is None
     else f"{g(r, 'item2_trigger', 'p99_difference_written_ms', 'value'):+.1f} ms"),
    ("2 p50 difference", lambda r: f"{round(g(r, 'item2_trigger', 'trigger_to_res_ms', 'p50') - g(r, 'item2_trigger', 'bare_paced_ms', 'p50'), 1):+} ms"),
    ("2 parts answered / sent; missing, late, fail-safe",
     lambda r: f"{g(r, 'item2_trigger', 'plc', 'answered')}/{g(r, 'item2_trigger', 'plc', 'triggers')}; "
               f"{g(r, 'item2_trigger', 'plc', 'missing')}, {g(r, 'item2_trigger', 'plc', 'late')}, "
               f"{g(r, 'item2_trigger', 'plc', 'failsafe') or 0}"),
    ("3 FP32 p50 / p99 (ms)", lambda r: f"{g(r, 'item3_fp32_vs_int8', 'latency_ms', 'fp32', 'p50')} / "
                                        f"{g(r, 'item3_fp32_vs_int8', 'latency_ms', 'fp32', 'p99')}"),
    ("3 INT8 p50 / p99 (ms)", lambda r: f"{g(r, 'item3_fp32_vs_int8', 'latency_ms', 'int8', 'p50')} / "
                                        f"{g(r, 'item3_fp32_vs_int8', 'latency_ms', 'int8', 'p99')}"),
    ("3 INT8/FP32 latency (median of rounds); CPU pick",
     lambda r: f"{g(r, 'item3_fp32_vs_int8', 'int8_over_fp32_latency')}; {g(r, 'item3_fp32_vs_int8', 'cpu_choice')}"),
    ("3 top-1 FP32 → INT8 (escapes, false rejects)", lambda r: accuracy(g(r, "item3_fp32_vs_int8", "accuracy"))),
    ("4 p50 ms: capture / preprocess / infer / decide / trigger→RES written", lambda r: " / ".join(
        str(g(r, "item2_trigger", "stages_ms", k, "p50")) for k in ("capture", "preprocess", "infer", "decide", "plc"))),
    ("4 p99 ms: capture / preprocess / infer / decide / trigger→RES written", lambda r: " / ".join(
        str(g(r, "item2_trigger", "stages_ms", k, "p99")) for k in ("capture", "preprocess", "infer", "decide", "plc"))),
    ("4 edge overhead (RES written minus infer) p50 / p99 (ms)",
     lambda r: f"{g(r, 'item2_trigger', 'stages_ms', 'edge_overhead', 'p50')} / "
               f"{g(r, 'item2_trigger', 'stages_ms', 'edge_overhead', 'p99')}"),
    ("4 outputs thread p50 ms: publish / metrics / archive (queue)", lambda r: " / ".join(
        str(g(r, "item2_trigger", "sinks_ms", k, "p50")) for k in ("publisher", "metricssink", "rejectarchive"))),
    ("5 **no-op pipeline, 224×224 frames**: wall / CPU ms per frame",
     lambda r: f"**{g(r, 'item5_noop_overhead', 'input_size', 'ms_per_frame_median')}** / "
               f"{g(r, 'item5_noop_overhead', 'input_size', 'cpu_ms_per_frame_median')}"),
    ("5 no-op pipeline, val frames as decoded (+ Pillow resize): wall / CPU",
     lambda r: f"{g(r, 'item5_noop_overhead', 'native', 'ms_per_frame_median')} / "
               f"{g(r, 'item5_noop_overhead', 'native', 'cpu_ms_per_frame_median')}"),
    ("5 image decode (`read_image`), p50 ms per file, not included above", lambda r: g(r, "decode", "decode_ms", "p50")),
    ("6 preprocessing allocations (tracemalloc, 40 frames): net / largest transient per frame",
     lambda r: f"{g(r, 'preprocess_alloc', 'net_bytes')} B / {g(r, 'preprocess_alloc', 'max_transient_bytes_per_frame')} B"),
    ("6 peak RSS (whole bench)", lambda r: f"{g(r, 'item6_memory', 'peak_rss_mib')} MiB"),
    ("6 RSS over the trigger run after its first 20 %: start → end, growth, slope",
     lambda r: rss(g(r, "item2_trigger", "rss"))),
    ("targets passed", lambda r: f"{sum(1 for t in r['targets'] if t['ok'])}/{len(r['targets'])}"
                                 + "".join(f"; **FAIL** {t['target']}" for t in r["targets"] if t["ok"] is False)),
]


def cell(fn: Any, r: dict[str, Any]) -> str:
    try:
        v = fn(r)
    except (KeyError, TypeError, IndexError):
        return "—"
    return "—" if v is None else str(v)


def main(argv: list[str]) -> int:
    runs = []
    for a in argv:
        name, _, path = a.partition("=")
        with open(path, encoding="utf-8") as f:
            runs.append((name, json.load(f)))
    print("| figure | " + " | ".join(f"run {n}" for n, _ in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for label, fn in ROWS:
        print(f"| {label} | " + " | ".join(cell(fn, r) for _, r in runs) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
