"""Trigger mode over a serial pty at a set rate, interleaved with paced bare inference (items 2, 4, 6).

The station is the product's own :class:`edge.app.Station` (folder replay decoding ahead in its
reader thread, ONNX Runtime, PLC link, ZeroMQ, archive, metrics) with its PLC port on the slave of
a direct pty; :class:`edge.plc.simulator.PlcSimulator`, in a process of its own like a real PLC
(:mod:`edge.bench.plc_process`), owns that pty, plays the PLC on its master, sends ``TRG`` at
``rate_hz`` and measures trigger -> ``RES`` (from just before it writes ``TRG`` to when it has
read the ``RES`` line). No socat pair here: a relay process adds two process wake-ups per
telegram (simulator -> socat -> station, and back) that a real UART does not have (echo over
each, 600 round trips at 20 Hz: socat p50 0.42 / p99 2.8-3.3 ms, direct pty p50 0.30-0.34 / p99
1.4-2.1 ms), and the target is about the station's own latency.
The run is cut into blocks; after each block the station idles while the bare session runs the
same number-per-second of batch-1 inferences on pre-made tensors, so both distributions come
from the same minutes of machine load. Both sides time from when the part was due: the simulator
from just before it writes ``TRG``, the bare loop from each call's start, or from its scheduled instant when it had to wait (a call
held up by a stalled predecessor counts that wait, as the station's next part does). The replay's reader thread prepares each frame
(``Fitter(spec, tensor=True)``: resize and float conversion, off the trigger path) as
:class:`edge.app.Station` sets it up; ``prepare=False`` turns that off (the trigger path then
does the whole preprocessing).
"""

from __future__ import annotations

import math
import time
from array import array
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.bench.bare import BareSession
from edge.bench.measure import RssSampler, percentile_difference_ci, rss_growth, summary
from edge.bench.pipeline import Counter, TimedSink, samples
from edge.settings import Settings

BARE_TOTAL_MAX_S = 300.0  # s: up to 5 minutes both p99s come from the same number of samples
STAGES = ("capture", "preprocess", "infer", "decide", "plc", "total")


def _wait_link(station: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if station.link is None or station.link.state == "ok":
            return
        time.sleep(0.05)
    raise RuntimeError(f"PLC link not open after {timeout:.0f} s")


def trigger_run(settings: Settings, bare: BareSession, tensors: Sequence[np.ndarray], *, duration_s: float,
                block_s: float, rate_hz: float, rss: RssSampler, warmup_parts: int = 10,
                prepare: bool = True) -> dict[str, Any]:
    """Run the trigger-mode station for ``duration_s`` (plus a short uncounted warm-up).

    Returns:
        JSON-ready dict: ``trigger_to_res_ms`` (simulator), ``bare_paced_ms`` (bare inference at
        the same rate, response time counting the wait behind a stalled call: see
        :meth:`~edge.bench.bare.BareSession.paced`), ``bare_paced_call_ms`` (the calls alone), ``stages_ms`` (edge-side per-part stages), ``sinks_ms`` (outputs thread),
        ``plc`` counts (answered, missing, late, duplicates, fail-safe), ``rss`` (growth over the
        run), ``blocks``.
    """
    from edge.app import Station
    from edge.bench.plc_process import PlcProcess

    s = settings.model_copy(update={"plc": settings.plc.model_copy(update={"mode": "trigger"}),
                                    "camera": settings.camera.model_copy(update={"loop": True})})
    nblocks = max(1, math.ceil(duration_s / block_s))
    parts_per_block = max(1, round(duration_s * rate_hz / nblocks))
    bare_per_block = max(1, round(min(duration_s, BARE_TOTAL_MAX_S) * rate_hz / nblocks))
    answer_timeout_ms = s.plc.deadline_ms + 250.0
    sim_lat = array("d")
    bare_lat = array("d")
    bare_call = array("d")
    plc: dict[str, Any] = defaultdict(int)
    failsafe: dict[str, int] = defaultdict(int)
    times = samples()
    counter = Counter()
    blocks: list[dict[str, Any]] = []
    # the PLC child first: it owns the pty; the station opens its slave path. On leaving the
    # block the station stops first (closing its end), then the child ends and closes the pty.
    with PlcProcess(rate_hz=rate_hz, answer_timeout_ms=answer_timeout_ms) as plc_proc:
        station = Station(s, plc_port=plc_proc.port)
        try:
            insp = station.inspector
            insp.sinks[:] = [TimedSink(type(k).__name__.lower(), k, times) for k in insp.sinks] + [counter]
            if not prepare:  # Station prepares model tensors in the reader thread; here: not
                station.source.prepare = None
            station.start()
            _wait_link(station)
            sim_block = plc_proc.block

            counter.expect(warmup_parts)
            sim_block("W", warmup_parts)  # not counted: first triggers after start
            counter.wait(10.0)  # warm-up results through the outputs before counting starts
            bare.paced(tensors, min(warmup_parts, 5), rate_hz)
            counter.stages.clear()
            for v in times.values():
                del v[:]
            t_run0 = time.monotonic()
            for b in range(nblocks):
                t0 = time.monotonic()
                rep = sim_block(f"B{b:03d}", parts_per_block)
                sim_lat.extend(rep.latencies_ms)
                for key in ("missing", "duplicates", "unexpected", "late"):
                    plc[key] += len(getattr(rep, key))
                plc["triggers"] += rep.triggers_sent
                plc["answered"] += rep.answered
                plc["bad_checksum"] += rep.bad_checksum
                for cause, n in rep.failsafe.items():
                    failsafe[cause] += n
                t1 = time.monotonic()
                bt = bare.paced(tensors, bare_per_block, rate_hz, start=b * bare_per_block)
                bare_lat.extend(bt.latencies_ms)
                bare_call.extend(bt.call_ms)
                blocks.append({"trigger_s": round(t1 - t0, 2), "parts": rep.triggers_sent,
                               "trigger_p50_ms": summary(rep.latencies_ms)["p50"],
                               "bare_paced_p50_ms": summary(bt.latencies_ms)["p50"]})
            t_run1 = time.monotonic()
        finally:
            summary_dict = station.stop()
    # edge_overhead: the product's own share of trigger -> RES queued, everything but the model
    # (waiting for the previous part included)
    stages = {k: summary(counter.stages.get(k, ())) for k in (*STAGES, "edge_overhead")}
    growth = rss_growth(rss.between(t_run0, t_run1))
    plc_out = dict(plc)
    plc_out["failsafe"] = dict(failsafe)
    return {
        "rate_hz": rate_hz, "duration_s": round(t_run1 - t_run0, 1), "blocks": blocks,
        "prepared_in_capture_thread": prepare,
        "trigger_to_res_ms": summary(sim_lat),
        "bare_paced_ms": summary(bare_lat),
        "bare_paced_call_ms": summary(bare_call),
        "p99_difference_ms": percentile_difference_ci(sim_lat, bare_lat),
        "stages_ms": stages,
        "sinks_ms": {k: summary(v) for k, v in times.items() if k != "counter"},
        "plc": plc_out,
        "inspector_stats": dict(station.inspector.stats),
        "rss": growth,
        "parts": summary_dict.get("parts"),
    }
