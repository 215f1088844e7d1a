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
Two clocks per part: the simulator's own (``TRG`` written -> ``RES`` read by the PLC, which
includes the PLC process's wake-up to read it) and the station's answer time (``TRG`` written ->
``RES`` written into the port, :class:`AnswerClock`): what the station owes the line; the PLC's
read latency is the PLC's (a real one reads its UART in its own scan cycle). The target is
checked on the first, the stricter one; the second is reported beside it.
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
import threading
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


class AnswerClock:
    """Bench instrument: when each part's ``RES`` left the station, on the machine's monotonic clock.

    Wraps the station's :meth:`edge.parts.PartTracker.answer` (every answer, real or fail-safe,
    goes through it; ``Part.t_answer`` is taken right after ``send()`` returned) and the link's
    queueing :meth:`edge.plc.link.PlcLink.send`. On the usual path (``PlcLink.send_now``) ``send()``
    returns once the bytes are in the port: ``t_answer`` is "RES written". When the telegram went
    to the writer thread's queue instead, ``t_answer`` is only when it was queued: such parts are
    listed in :attr:`queued` and the bench uses the PLC's own arrival time for them (an upper
    bound). Both processes read CLOCK_MONOTONIC (system-wide: clock_gettime(2)), so
    ``at[pid] - sent_at`` (simulator: just before the ``TRG`` write) is the station's answer time.
    """

    def __init__(self, tracker: Any, link: Any) -> None:
        self.at: dict[str, float] = {}
        self.queued: set[str] = set()
        self._local = threading.local()  # per thread: did this answer's send() go to the queue?
        self._answer = tracker.answer
        tracker.answer = self._answered
        if link is not None:
            self._send = link.send
            link.send = self._sent_queued

    def _sent_queued(self, telegram: bytes) -> bool:
        self._local.queued = True
        ok: bool = self._send(telegram)
        return ok

    def _answered(self, part: Any, send: Any, cause: str | None = None) -> bool:
        self._local.queued = False
        ok: bool = self._answer(part, send, cause)
        if ok and part.t_answer is not None:
            self.at[part.part_id] = part.t_answer
            if self._local.queued:
                self.queued.add(part.part_id)
        return ok

    def station_ms(self, sent_at: Sequence[Sequence[Any]], plc_ms: Sequence[float]) -> tuple[list[float], int]:
        """``TRG`` written -> ``RES`` written (ms) for each answer the PLC timed; a part whose RES
        was queued (or not seen here) keeps the PLC's figure. Returns (latencies, parts kept)."""
        out: list[float] = []
        kept = 0
        for (pid, t_sent), plc in zip(sent_at, plc_ms):
            t = self.at.pop(pid, None)
            if t is None or pid in self.queued:
                self.queued.discard(pid)  # both maps hold only parts not yet paired
                out.append(plc)
                kept += 1
            else:
                # t_answer is taken after the write returned; the write wakes the PLC, which may
                # read (and time) the RES before the writing thread runs again: then the read
                # instant is the closer bound on "written"
                out.append(min(plc, 1000.0 * (t - t_sent)))
        return out, kept


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
        JSON-ready dict: ``trigger_to_res_ms`` (simulator: ``TRG`` written -> ``RES`` read by the
        PLC), ``trigger_to_res_written_ms`` (-> ``RES`` written by the station: :class:`AnswerClock`),
        ``samples_ms`` (every sample of both and of the bare side), ``bare_paced_ms`` (bare inference at
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
    res_written = array("d")
    res_queued = 0
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
            clock = AnswerClock(insp.tracker, station.link)
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
                written, queued = clock.station_ms(rep.sent_at, rep.latencies_ms)
                res_written.extend(written)
                res_queued += queued
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
        "trigger_to_res_written_ms": summary(res_written),
        "res_written_from_plc_figure": res_queued,
        # every sample, so runs can be pooled (tools/bench_pool.py): a p99 from one run's few
        # thousand samples moves by several ms between runs here
        "samples_ms": {"trigger_to_res": [round(x, 3) for x in sim_lat],
                       "trigger_to_res_written": [round(x, 3) for x in res_written],
                       "bare_paced": [round(x, 3) for x in bare_lat]},
        "bare_paced_ms": summary(bare_lat),
        "bare_paced_call_ms": summary(bare_call),
        "p99_difference_ms": percentile_difference_ci(sim_lat, bare_lat),
        "p99_difference_written_ms": percentile_difference_ci(res_written, bare_lat),
        "stages_ms": stages,
        "sinks_ms": {k: summary(v) for k, v in times.items() if k != "counter"},
        "plc": plc_out,
        "inspector_stats": dict(station.inspector.stats),
        "rss": growth,
        "parts": summary_dict.get("parts"),
    }
