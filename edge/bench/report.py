"""The ``edgeqc bench`` table and the target checks (the list: BENCHMARKS.md, "Which targets hold"),
from run_bench's result dict."""

from __future__ import annotations

from typing import Any

RSS_FLAT_MIB = 5.0
"""'RSS flat' = at most this growth (MiB) over the trigger run after its first 20 %."""


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _check(name: str, ok: bool | None, measured: str, target: str) -> dict[str, Any]:
    return {"target": name, "ok": ok, "measured": measured, "required": target}


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 6 targets: ok True/False (None = not measured, or ``--quick`` sizes: not judged), with the numbers."""
    out = []
    ratio = _get(r, "item1_bare_vs_pipeline", "throughput_ratio")
    rci = _get(r, "item1_bare_vs_pipeline", "throughput_ratio_ci90")
    rci_text = ""
    if rci and None not in rci:
        rci_text = f" (median of {_get(r, 'item1_bare_vs_pipeline', 'pipeline', 'rounds')} rounds; 90 % bootstrap interval {rci[0]} .. {rci[1]}"
        rci_text += (", which crosses 0.95: one run cannot decide, pool several with .venv/bin/python "
                     "tools/bench_pool.py)" if rci[0] < 0.95 <= rci[1] else ")")
    out.append(_check("pipeline throughput / bare throughput", None if ratio is None else ratio >= 0.95,
                      f"{ratio}{rci_text}" if ratio is not None else "not measured", ">= 0.95, steady state"))
    noop = _get(r, "item5_noop_overhead", "ms_per_frame_median")
    hw = _get(r, "model_spec", "input_size")
    out.append(_check(f"no-op pipeline overhead per frame (model input {hw})", None if noop is None else noop <= 0.5,
                      f"{noop} ms wall ({_get(r, 'item5_noop_overhead', 'cpu_ms_per_frame_median')} ms CPU)"
                      if noop is not None else "not measured", "<= 0.5 ms, excluding JPEG decode"))
    trg = _get(r, "item2_trigger", "trigger_to_res_ms", "p99")
    bare = _get(r, "item2_trigger", "bare_paced_ms", "p99")
    rate = _get(r, "item2_trigger", "rate_hz")
    ok = None if trg is None or bare is None else trg <= bare + 3.0
    ci = _get(r, "item2_trigger", "p99_difference_ms", "ci")
    ci_text = f"; 90 % bootstrap interval {ci[0]:+} .. {ci[1]:+} ms" if ci and None not in ci else ""
    if ci and None not in ci and ci[0] <= 3.0 < ci[1]:
        ci_text += (", which crosses +3 ms: one run cannot decide, pool several with "
                    ".venv/bin/python tools/bench_pool.py")
    written = _get(r, "item2_trigger", "trigger_to_res_written_ms", "p99")
    written_text = (f"; to the RES written by the station {written} ms ({round(written - bare, 2):+} ms), "
                    "the rest is the PLC's read" if written is not None and bare is not None else "")
    out.append(_check(f"trigger -> RES p99 at {rate} parts/s", ok,
                      f"{trg} ms vs bare p99 {bare} ms ({round(trg - bare, 2):+} ms{ci_text}{written_text})"
                      if ok is not None else "not measured", "<= bare p99 + 3 ms, RES as read by the PLC"))
    alloc = _get(r, "preprocess_alloc")
    out.append(_check("no frame-sized allocation in preprocessing (steady state)",
                      None if alloc is None else bool(alloc["zero_frame_sized"]),
                      f"net {alloc['net_bytes']} B over {alloc['frames']} frames, largest transient "
                      f"{alloc['max_transient_bytes_per_frame']} B/frame" if alloc else "not measured",
                      f"< {alloc['frame_sized_threshold_bytes'] if alloc else '?'} B (one H x W plane)"))
    rss = _get(r, "item2_trigger", "rss")
    growth = None if not rss else rss.get("growth_mib")
    out.append(_check("RSS flat over the trigger run", None if growth is None else growth <= RSS_FLAT_MIB,
                      f"{growth} MiB over {rss.get('duration_s')} s (slope {rss.get('slope_mib_per_min')} "
                      f"MiB/min)" if growth is not None else "not measured",
                      f"<= {RSS_FLAT_MIB} MiB growth"))
    prec = _get(r, "item3_fp32_vs_int8") or {}
    drop = _get(prec, "accuracy", "top1_drop_pp")
    out.append(_check("INT8 top-1 within 1 pp of FP32", None if drop is None else drop <= 1.0,
                      f"{drop} pp ({prec.get('int8_origin', '')})" if drop is not None
                      else prec.get("skipped") or prec.get("accuracy_note") or "not measured", "<= 1.0 pp"))
    from edge.backends.select import TIE_MARGIN

    choice = prec.get("cpu_choice")
    lat = prec.get("latency_ms") or {}
    p50 = {k: _get(lat, k, "p50") for k in ("fp32", "int8")}
    faster = None if None in p50.values() else ("int8" if p50["int8"] < p50["fp32"] else "fp32")
    other = {"fp32": "int8", "int8": "fp32"}.get(str(choice))
    # the choice may be slower than the other by at most the selector's tie margin (FP32 is kept
    # when INT8 is < TIE_MARGIN faster); a clearly slower choice fails
    ok = (None if choice is None or faster is None or other is None
          else p50[choice] <= (1.0 + TIE_MARGIN) * p50[other])
    out.append(_check("CPU runs the faster of FP32 / INT8", ok,
                      f"picks {choice}, faster: {faster} (p50 FP32 {p50['fp32']} ms, INT8 {p50['int8']} ms)"
                      if choice else prec.get("skipped") or "not measured",
                      f"the choice's p50 in item 3 <= the other's x {1 + TIE_MARGIN:g} (choice rule of "
                      f"edge.backends.select.choose_cpu_model: INT8 only when > {TIE_MARGIN:.0%} faster)"))
    if _get(r, "sizes", "quick"):
        for t in out:
            t["ok"] = None
    return out


def _f(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}{unit}" if abs(v) < 10 else f"{v:.1f}{unit}"
    return f"{v}{unit}"


def _counts(d: Any) -> str:
    """``{"TIMEOUT": 3}`` -> ``"TIMEOUT 3"``; empty or missing -> ``"none"``."""
    return ", ".join(f"{k} {v}" for k, v in d.items()) if isinstance(d, dict) and d else "none"


def format_table(r: dict[str, Any]) -> str:
    """Plain-text table of the headline figures and the target checks."""
    lines = [f"edgeqc bench: {r.get('model')} over {r.get('images')}",
             (f"machine: {_get(r, 'machine', 'cpu')}, {_get(r, 'machine', 'usable_cpus')} CPUs; load average "
             f"{r.get('load_average_start')} -> {r.get('load_average_end')}; {r.get('seconds')} s"), ""]
    rows: list[tuple[str, str, str]] = []
    i1 = r.get("item1_bare_vs_pipeline") or {}
    if i1:
        rows += [("1 bare ORT, batch 1 (tight loop)",
                  f"{_f(_get(i1, 'bare', 'steady_ms_per_frame_median'))} ms/frame (steady)",
                  (f"whole blocks {_f(_get(i1, 'bare', 'ms_per_frame_median'))} ms/frame; p50 "
                   f"{_f(_get(i1, 'bare', 'latency_ms', 'p50'))} p99 {_f(_get(i1, 'bare', 'latency_ms', 'p99'))} ms")),
                 ("1 full pipeline, free-run",
                  f"{_f(_get(i1, 'pipeline', 'steady_ms_per_frame_median'))} ms/frame (steady)",
                  f"whole blocks {_f(_get(i1, 'pipeline', 'ms_per_frame_median'))} ms/frame"),
                 ("1 ratio pipeline/bare throughput",
                  f"{_f(i1.get('throughput_ratio'))} (median of rounds, steady state)",
                  (f"90 % interval {i1.get('throughput_ratio_ci90')}; whole blocks summed "
                   f"{_f(i1.get('throughput_ratio_of_totals'))}; CPU-time ratio {_f(i1.get('cpu_efficiency_ratio'))}"))]
    i2 = r.get("item2_trigger") or {}
    if i2:
        t, b = i2.get("trigger_to_res_ms") or {}, i2.get("bare_paced_ms") or {}
        rows += [(f"2 trigger->RES at {i2.get('rate_hz')}/s ({t.get('count')} parts)",
                  f"p50 {_f(t.get('p50'))} p99 {_f(t.get('p99'))} max {_f(t.get('max'))} ms",
                  (f"answered {_get(i2, 'plc', 'answered')}/{_get(i2, 'plc', 'triggers')}, missing "
                  f"{_get(i2, 'plc', 'missing')}, late {_get(i2, 'plc', 'late')}, fail-safe "
                  f"{_counts(_get(i2, 'plc', 'failsafe'))}")),
                 ("2 trigger->RES written (station)",
                  (f"p50 {_f(_get(i2, 'trigger_to_res_written_ms', 'p50'))} p99 "
                   f"{_f(_get(i2, 'trigger_to_res_written_ms', 'p99'))} max "
                   f"{_f(_get(i2, 'trigger_to_res_written_ms', 'max'))} ms"),
                  "TRG written -> RES in the port (the row above adds the PLC's read)"),
                 (f"2 bare ORT paced at {i2.get('rate_hz')}/s ({b.get('count')} runs)",
                  f"p50 {_f(b.get('p50'))} p99 {_f(b.get('p99'))} max {_f(b.get('max'))} ms",
                  (f"counting the wait behind a stalled call; the call alone p50 "
                   f"{_f(_get(i2, 'bare_paced_call_ms', 'p50'))} p99 {_f(_get(i2, 'bare_paced_call_ms', 'p99'))} ms"))]
    i3 = r.get("item3_fp32_vs_int8") or {}
    if i3.get("latency_ms"):
        acc = i3.get("accuracy") or {}
        for k in ("fp32", "int8"):
            a = acc.get(k) or {}
            rows.append((f"3 {k.upper()} batch 1", (f"p50 {_f(_get(i3, 'latency_ms', k, 'p50'))} p99 "
                         f"{_f(_get(i3, 'latency_ms', k, 'p99'))} ms"),
                         f"top-1 {a.get('top1')} % ({a.get('correct')}/{a.get('images')}), escapes "
                         f"{a.get('escapes')}/{a.get('defective')}, false rejects {a.get('false_rejects')}/"
                         f"{a.get('good')}" if a else "accuracy not measured"))
        rows.append(("3 INT8/FP32 latency; CPU choice", _f(i3.get("int8_over_fp32_latency")),
                     f"picks {i3.get('cpu_choice')}; INT8: {i3.get('int8_origin')}"))
    elif i3:
        rows.append(("3 FP32 vs INT8", "skipped", str(i3.get("skipped"))))
    stages = i2.get("stages_ms") or {}
    if stages:
        parts = [f"{k} {_f(_get(stages, k, 'p50'))}" for k in ("capture", "preprocess", "infer", "decide", "plc")]
        rows.append(("4 stages (trigger run, p50 ms)", ", ".join(parts),
                     (f"edge overhead (plc - infer) p50 {_f(_get(stages, 'edge_overhead', 'p50'))} "
                     f"p99 {_f(_get(stages, 'edge_overhead', 'p99'))} ms")))
        sinks = i2.get("sinks_ms") or {}
        rows.append(("4 outputs thread (p50 ms)", ", ".join(f"{k} {_f(v.get('p50'))}" for k, v in sinks.items()),
                     "off the RES path"))
    i5 = r.get("item5_noop_overhead") or {}
    dec = r.get("decode") or {}
    for key, what in (("input_size", "frames at model input"), ("native", "frames as decoded")):
        v = i5.get(key) or {}
        if v:
            rows.append((f"5 no-op backend, {what}", f"{_f(v.get('ms_per_frame_median'))} ms/frame",
                         (f"CPU {_f(v.get('cpu_ms_per_frame_median'))} ms/frame; preprocess p50 "
                          f"{_f(_get(v, 'stages_ms', 'preprocess', 'p50'))} ms")))
    if dec:
        rows.append(("5 JPEG/PNG decode (not in the above)", f"{_f(_get(dec, 'decode_ms', 'p50'))} ms/frame",
                     "commonest frame sizes " + ", ".join(f"{k} x{v}" for k, v in (dec.get("frame_shapes_top") or {}).items())))
    m6 = r.get("item6_memory") or {}
    if m6:
        tr = m6.get("trigger_run") or {}
        rows.append(("6 peak RSS; growth over trigger run", f"{m6.get('peak_rss_mib')} MiB; {tr.get('growth_mib')} MiB",
                     f"{tr.get('duration_s')} s, slope {tr.get('slope_mib_per_min')} MiB/min"))
    w0 = max(len(a) for a, _, _ in rows) if rows else 10
    w1 = max(len(b) for _, b, _ in rows) if rows else 10
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows]
    lines.append("")
    quick = bool(_get(r, "sizes", "quick"))
    head = 'targets (BENCHMARKS.md, "Which targets hold")'
    lines.append(f"{head}:" if not quick else
                 f"{head}: not judged, --quick sizes are a correctness run, not a measurement")
    for t in r.get("targets", []):
        mark = "n/a " if quick else {True: "PASS", False: "FAIL", None: "n/a "}[t["ok"]]
        lines.append(f"  [{mark}] {t['target']}: {t['measured']} (required {t['required']})")
    return "\n".join(lines)
