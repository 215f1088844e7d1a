"""The inspection loop: trigger -> frame -> preprocess -> infer -> decide -> RES, then outputs.

Threads (docs/ARCHITECTURE.md): the PLC reader calls :meth:`Inspector.on_trigger`. A lone trigger
(nothing being inspected, nothing waiting) is inspected in that PLC reader thread, after the link
handed reading on to its other reader thread (:mod:`edge.plc.link`): no thread hand-off on its
path. Otherwise the trigger is queued for the inspection thread, which forms batches of pending
triggers (up to the model's max batch), runs the model and answers
each part through the :class:`~edge.parts.PartTracker` (the RES of every part of a batch is written
to the PLC, or queued to its writer thread when a direct write could block, *before* any result
is built, and before any ZeroMQ, JPEG or disk work); the
deadline watchdog answers parts that miss their deadline with a fail-safe; the outputs thread
feeds the sinks (ZeroMQ, archive, metrics) from a bounded queue and never blocks the inspection
thread (a full queue drops the output, counted, never the PLC answer).

Overlap (docs/performance.md): capture runs in its own thread (camera grabber, or the replay
reader decoding ahead), outputs in theirs. A backend with asynchronous inference
(``submit``/``input_buffer``/``inflight_slots``: TensorRT on its CUDA streams, ONNX Runtime in its
worker thread) gets two batches in flight: the inspection thread preprocesses the next batch
into the backend's second input buffer, and answers the previous one, while the model runs. A
lone trigger (nothing in flight, nothing waiting) runs inline on ONNX Runtime: the hand-off would
only add two thread wake-ups of latency. The noop backend always runs inline.

Drops are explicit and counted in :attr:`Inspector.stats`: ``free_run_skipped`` (frames not
inspected because of ``plc.free_run_every``), ``outputs_dropped`` (outputs queue full),
``shed_late`` (overload: parts answered fail-safe ``TIMEOUT`` at once because they could no
longer make their deadline, see :meth:`Inspector._jobs_for`); a live
source counts frames replaced before anyone took them (``source.stats["dropped_stale"]``). A
triggered part is never dropped: it is answered by its result or by a fail-safe.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edge.decision import Verdict, check_decision_settings, decide
from edge.parts import Part, PartTracker
from edge.plc.telegram import encode_result
from edge.preprocess import Preprocessor, fit_key, tensor_key
from edge.priority import background_thread
from edge.result import InspectionResult, ModelInfo, failsafe_verdict
from edge.settings import DecisionSettings, Settings
from edge.summary import RunSummary

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger("edgeqc.inspection")

LONE_HUNG_S = 5.0
"""s: a lone part still being inspected in a PLC reader thread after this is taken as hung (no
systemd watchdog ping; docs/service.md: ``WatchdogSec=30``, pings every 15 s)."""


class Sink(Protocol):
    def handle(self, result: InspectionResult) -> None: ...


class Inspector:
    """Runs the loop for one station. Call :meth:`start`, then :meth:`stop` (drains) or use ``with``.

    Args:
        settings: the settings tree.
        backend: an open :class:`edge.backends.Backend` (its ``spec`` gives labels and preprocessing).
        source: an open frame source from :func:`edge.capture.open_source`.
        send_telegram: writes or queues bytes to the PLC (``PlcLink.send_now``); None = no PLC.
        sinks: outputs called from the outputs thread with each :class:`InspectionResult`.
        status_sinks: callables given the status dict every ``zmq.status_interval_ms``.
    """

    def __init__(
        self,
        settings: Settings,
        backend: Any,
        source: Any,
        send_telegram: Callable[[bytes], object] | None = None,
        sinks: list[Sink] | None = None,
        status_sinks: list[Callable[[dict[str, Any]], object]] | None = None,
    ) -> None:
        self.settings = settings
        self.plc = settings.plc
        self._backend = backend
        self._next_backend: Any = None  # (backend, decision) waiting for the swap; under _swap_lock
        self._swap_lock = threading.Lock()
        self.source = source
        self._send = send_telegram
        self.sinks = list(sinks or [])
        self.status_sinks = list(status_sinks or [])
        check_decision_settings(settings.decision, backend.spec.labels)
        self._slots = _Slots(backend)
        self._model_info = self._info_of(backend)
        self.summary = RunSummary(settings.decision.pass_classes)
        self.tracker = PartTracker(self._expire)
        # SimpleQueue (C, one lock): the trigger hand-off from the PLC reader is on every part's
        # path; measured here 0.09 ms p50 / 0.4 ms p99 vs 0.17 / 0.7 ms for queue.Queue.
        self._triggers: queue.SimpleQueue[Part] = queue.SimpleQueue()
        # Held by whoever inspects: the inspection thread while it has batches, or a PLC reader
        # thread running a lone trigger (on_trigger). Also guards the model swap.
        self._busy = threading.Lock()
        self._outputs: queue.Queue[Any] = queue.Queue(maxsize=1024)
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._accepting = True
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.model_ok = True
        self.plc_state = "ok" if (settings.plc.enabled and send_telegram) else "disabled"
        self.stats = {"outputs_dropped": 0, "late_results": 0, "triggers_refused": 0, "infer_errors": 0,
                      "reloads": 0, "reload_failures": 0, "free_run_skipped": 0, "batches": 0,
                      "batched_parts": 0, "shed_late": 0}
        self._per_part_s = 0.0  # model time per part of the recent batches, s (EWMA; see _jobs_for)
        self.last_reload_error: str | None = None
        self.on_loop: Callable[[], object] | None = None  # called every loop turn (systemd watchdog)
        self.yield_after_res = True  # see _complete
        # trigger mode: on_trigger may hand a lone trigger back to the PLC reader to inspect
        self.inline_triggers = self.plc.mode == "trigger"
        self._lone_since: float | None = None  # time.monotonic() s a lone part went to a PLC reader
        self.finished = threading.Event()  # set when a replay source in free-run mode is exhausted

    # ------------------------------------------------------------------ public API
    @property
    def backend(self) -> Any:
        return self._backend

    @property
    def model_info(self) -> ModelInfo:
        return self._model_info

    @staticmethod
    def _info_of(b: Any) -> ModelInfo:
        return ModelInfo(Path(b.model_path).name, b.model_hash, b.precision, b.name)

    def start(self) -> Self:
        target = self._run_trigger if self.plc.mode == "trigger" else self._run_free
        for name, fn in (("inspect", target), ("outputs", self._run_outputs), ("status", self._run_status)):
            t = threading.Thread(target=fn, name=f"edgeqc-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def on_trigger(self, part_id: str, t_arrival: float | None = None) -> Callable[[], None] | None:
        """A ``TRG`` arrived (called from the PLC reader thread). ``t_arrival``: time.monotonic() s.

        Returns:
            None when the part was queued for the inspection thread (or answered fail-safe while
            shutting down). For a lone trigger on an idle station (trigger mode, nothing being
            inspected, nothing queued, a backend that may run in any thread): a callable that
            inspects and answers it in the caller's thread. :class:`~edge.plc.link.PlcLink` runs
            it after its other reader thread took over the port; a caller that cannot must
            call it anyway (it holds the inspection lock until it ran).
        """
        now = time.monotonic() if t_arrival is None else t_arrival
        part = Part(self._next_seq(), part_id, now, time.time() - (time.monotonic() - now),
                    now + self.plc.deadline_ms / 1000.0)
        self.tracker.register(part)
        if not self._accepting:  # shutting down: still answer, fail-safe
            self.stats["triggers_refused"] += 1
            self._failsafe(part, "ERROR", None)
            return None
        if (self.inline_triggers and self._slots.any_thread and self._triggers.empty()
                and self._busy.acquire(blocking=False)):
            self._lone_since = now
            return lambda: self._inspect_lone(part)
        self._triggers.put(part)
        return None

    def healthy(self) -> bool:
        """Heartbeat state: False (HBT FAULT) while the camera or the model is down."""
        return self.model_ok and getattr(self.source, "state", "ok") in ("ok", "exhausted")

    def request_reload(self, new_backend: Any, decision: DecisionSettings | None = None) -> None:
        """Swap to ``new_backend`` (and ``decision`` settings) between batches (SIGHUP).

        Raises:
            DecisionError: the new model's labels do not fit the (new) decision settings; the
                running model stays.
        """
        check_decision_settings(decision or self.settings.decision, new_backend.spec.labels)
        with self._swap_lock:
            replaced, self._next_backend = self._next_backend, (new_backend, decision)
        if replaced is not None:  # a newer reload before the swap: the older model never runs
            log.info("reload: %s replaced by a newer reload before it ran", self._info_of(replaced[0]).name)
            replaced[0].close()

    def discard_pending_reload(self) -> None:
        """Close a reloaded backend that never got swapped in (at shutdown)."""
        with self._swap_lock:
            pending, self._next_backend = self._next_backend, None
        if pending is not None:
            pending[0].close()

    def status(self) -> dict[str, Any]:
        s = self.summary
        rejects = sum(s.rejects.values())
        return {
            "schema": 1, "station_id": self.settings.station_id, "ts": time.time(),
            "parts_per_min": round(s.parts_per_min(), 2), "parts": s.parts, "rejects": rejects,
            "reject_rate": round(rejects / s.parts, 4) if s.parts else 0.0,
            "camera": "ok" if getattr(self.source, "state", "ok") in ("ok", "exhausted") else "lost",
            "plc": self.plc_state, "model": "ok" if self.model_ok else "fault",
            "model_name": self.model_info.name, "reload_error": self.last_reload_error,
            "corrupt_frames": int(getattr(self.source, "stats", {}).get("corrupt", 0)),
        }

    def stop(self, timeout: float = 5.0) -> dict[str, Any]:
        """Stop taking triggers, answer every part already triggered, flush outputs; returns the summary."""
        self._accepting = False
        end = time.monotonic() + timeout
        # Parts in flight finish or hit their deadline; both answer them.
        self.tracker.wait_all_answered(max(0.1, min(timeout, self.plc.deadline_ms / 1000.0 + 1.0)))
        if self._busy.acquire(timeout=max(0.1, end - time.monotonic())):  # a lone trigger's results emitted
            self._busy.release()
        self._stop.set()
        for t in self._threads:
            t.join(timeout=max(0.1, end - time.monotonic()))
        self.tracker.close()
        self.stats["late_results"] = self.tracker.late_results
        return self.summary.to_dict()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ internals
    def _next_seq(self) -> int:
        with self._seq_lock:
            self._seq += 1
            return self._seq

    def _telegram(self, part_id: str, v: Verdict) -> bytes:
        return encode_result(part_id, v.passed, v.label, v.probability, self.plc.pass_code, self.plc.fail_code)

    def _answer(self, part: Part, verdict: Verdict, cause: str | None) -> bool:
        send = self._send
        if send is None:
            return self.tracker.answer(part, lambda: None, cause)
        data = self._telegram(part.part_id, verdict)
        return self.tracker.answer(part, lambda: send(data), cause)

    def _failsafe(self, part: Part, cause: str, frame: Any) -> None:
        verdict = failsafe_verdict(cause)
        if self._answer(part, verdict, cause):
            log.warning("fail-safe %s", cause, extra={"part_id": part.part_id})  # the formatter shows part=
            r = InspectionResult(
                seq=part.seq, part_id=part.part_id, station_id=self.settings.station_id,
                trigger_ts=part.wall_trigger, verdict=verdict, decision_ts=time.time(),
                latency_ms={"plc": 1000.0 * ((part.t_answer or time.monotonic()) - part.t_trigger)},
                labels=self._backend.spec.labels, model=self.model_info, failsafe=cause,
                source_id=getattr(frame, "source_id", None), truth=getattr(frame, "label", None),
                frame=getattr(frame, "image", None), channel_order=self._backend.spec.channel_order,
            )
            self._emit(r)

    def _expire(self, part: Part) -> None:
        self._failsafe(part, "TIMEOUT", None)

    def _emit(self, r: InspectionResult) -> None:
        self.summary.add(r)
        try:
            self._outputs.put_nowait(r)
        except queue.Full:
            self.stats["outputs_dropped"] += 1

    def _maybe_swap(self) -> None:
        if self._next_backend is None:  # the usual case: no lock taken
            return
        with self._swap_lock:
            pending, self._next_backend = self._next_backend, None
        if pending is not None:
            nb, decision = pending
            if decision is not None:
                self.settings = self.settings.model_copy(update={"decision": decision})
            old, self._backend = self._backend, nb
            self._slots = _Slots(nb)
            self._model_info = self._info_of(nb)
            self.stats["reloads"] += 1
            log.info("model swapped to %s (%s, %s)", self.model_info.name, nb.precision, nb.name)
            try:
                old.close()
            except Exception:
                log.exception("closing the old backend failed")

    def _frame_for(self, part: Part) -> Any:
        """The first frame captured after the trigger (+ delay), or the next replay image."""
        left = part.deadline - time.monotonic()
        if left <= 0:
            return None
        if getattr(self.source, "state", "ok") == "lost":
            return None  # camera down: answer NO_FRAME now instead of waiting out the deadline
        if self.source.is_replay:
            return self.source.next_frame(timeout=left)
        after = part.t_trigger + self.plc.trigger_delay_ms / 1000.0
        return self.source.latest(after=after, timeout=left)

    def _inspect_lone(self, part: Part) -> None:
        """Inspect one trigger now in the calling thread; releases ``_busy`` (taken by on_trigger)."""
        try:
            jobs = self._jobs_for([part])
            batch = self._submit(jobs, inline=True) if jobs else None
            if batch is not None:
                self._complete(batch)
        finally:
            self._lone_since = None
            self._busy.release()

    def _loop_alive(self) -> None:
        """The inspection thread's turn: feed ``on_loop`` (the systemd watchdog) unless a lone
        part has been in a PLC reader thread for over ``LONE_HUNG_S``: a model call that hangs
        there must starve the watchdog as it would if the inspection thread itself had hung."""
        since = self._lone_since
        if self.on_loop and (since is None or time.monotonic() - since < LONE_HUNG_S):
            self.on_loop()

    def _run_trigger(self) -> None:
        inflight: deque[_Batch] = deque()
        while not (self._stop.is_set() and self._triggers.empty() and not inflight):
            self._loop_alive()
            parts = self._take_triggers(block=not inflight)
            if not inflight:  # the inspection lock is held exactly while batches are in flight
                if not parts:  # idle: swap a reloaded model within 0.1 s (unless a lone part runs)
                    if self._next_backend is not None and self._busy.acquire(blocking=False):
                        try:
                            self._maybe_swap()
                        finally:
                            self._busy.release()
                    continue
                self._busy.acquire()  # a lone trigger may be running in a PLC reader thread
                self._maybe_swap()  # between batches only
            if parts:
                jobs = self._jobs_for(parts)
                if jobs:
                    # alone (no batch in flight, no trigger waiting): run inline, lowest latency
                    batch = self._submit(jobs, inline=not inflight and self._triggers.empty())
                    if batch is not None:
                        inflight.append(batch)
            # Answer the oldest batch now, unless another one can still go in flight first (async
            # backend, more triggers were pending): then it is answered right after that submit.
            if inflight and (not parts or len(inflight) >= self._slots.depth):
                self._complete(inflight.popleft())
            if not inflight:
                self._busy.release()

    def _take_triggers(self, block: bool) -> list[Part]:
        """Up to max_batch pending triggers; waits up to 0.1 s for the first one when ``block``."""
        try:
            first = self._triggers.get(timeout=0.1) if block else self._triggers.get_nowait()
        except queue.Empty:
            return []
        parts = [first]
        max_batch = self._slots.max_batch
        while len(parts) < max_batch:
            try:
                parts.append(self._triggers.get_nowait())
            except queue.Empty:
                break
        return parts

    def _jobs_for(self, parts: list[Part]) -> list[tuple[Part, Any, float]]:
        """The frame of each part (fail-safe answers for parts without one).

        Overload (triggers faster than the model): a part that cannot be answered before its
        deadline even if its batch started now (``len(jobs) + 1`` model calls of
        ``_per_part_s`` each) gets its fail-safe ``TIMEOUT`` at once instead of a model call whose
        result the tracker would refuse as late; the time goes to parts that can still make it.
        Without this, a queue of late parts kept the model busy with results nobody could use
        (fresh-user test: 150 TRG/s against a ~80/s model gave 36 real verdicts in 3 s).
        """
        jobs: list[tuple[Part, Any, float]] = []
        for part in parts:
            if part.answered:  # deadline passed while queued
                continue
            if time.monotonic() + (len(jobs) + 1) * self._per_part_s > part.deadline:
                self.stats["shed_late"] += 1  # before the RES goes out: a reader of both sees both
                self._failsafe(part, "TIMEOUT", None)
                continue
            try:
                frame = self._frame_for(part)
            except Exception:
                log.exception("capture failed for part %s", part.part_id)
                frame = None
            if frame is None:  # past the deadline it is a TIMEOUT, whoever notices first
                self._failsafe(part, "TIMEOUT" if time.monotonic() >= part.deadline else "NO_FRAME", None)
                continue
            jobs.append((part, frame, time.monotonic()))
        return jobs

    def _run_free(self) -> None:
        every = self.plc.free_run_every
        n = 0
        last = None
        src = self.source
        inflight: deque[_Batch] = deque()
        # A replay has no camera clock: pace it at camera.fps when set (a real line's frame rate).
        period = 1.0 / self.settings.camera.fps if (src.is_replay and self.settings.camera.fps) else 0.0
        next_t = time.monotonic()
        while not self._stop.is_set():
            self._loop_alive()
            if not inflight:
                self._maybe_swap()
            wait = 0.0 if inflight else 0.5  # with a batch in flight, never sit on it
            if period and not inflight and self._stop.wait(max(0.0, next_t - time.monotonic())):
                break
            if src.is_replay:
                frame = src.next_frame(timeout=wait)
                if frame is not None and period:
                    next_t = max(next_t + period, time.monotonic() - period)
                if frame is None and getattr(src, "exhausted", False):
                    while inflight:
                        self._complete(inflight.popleft())
                    self.finished.set()
                    self._stop.wait(0.1)
                    continue
            else:
                frame = src.latest(after=last, timeout=wait)
            if frame is None:
                if inflight:
                    self._complete(inflight.popleft())
                continue
            last = frame.t_capture
            n += 1
            if (n - 1) % every:
                self.stats["free_run_skipped"] += 1
                continue
            now = time.monotonic()
            seq = self._next_seq()
            # Free-run parts have no deadline: nobody waits for them, so no watchdog entry. The part
            # id sent in RES is the frame sequence number (counts skipped frames too).
            part = Part(seq, str(n), frame.t_capture, frame.wall_time, now)
            batch = self._submit([(part, frame, now)])
            if batch is not None:
                inflight.append(batch)
            if len(inflight) >= self._slots.depth:
                self._complete(inflight.popleft())
        while inflight:
            self._complete(inflight.popleft())

    def _submit(self, jobs: list[tuple[Part, Any, float]], inline: bool = False) -> _Batch | None:
        """Preprocess ``jobs`` into a free input buffer and start their inference (``inline``: run
        it now where the backend allows, see :class:`_Slots`). None: it failed and every part was
        answered fail-safe ERROR."""
        t0 = time.monotonic()
        slots = self._slots
        keys = slots.prepared_keys
        # a frame the capture thread already prepared for this model skips that work here
        images = [f.prepared if f.prepared is not None and f.prepared_key in keys else f.image
                  for _, f, _ in jobs]
        try:
            pending, t_pre = slots.submit(images, inline)
        except Exception as exc:  # noqa: BLE001 - any runtime error: the parts get a fail-safe ERROR
            self._infer_failed(jobs, exc)
            return None
        return _Batch(jobs, pending, t0, t_pre, slots)

    def _infer_failed(self, jobs: list[tuple[Part, Any, float]], exc: BaseException) -> None:
        self.stats["infer_errors"] += 1
        self.model_ok = False
        log.error("inference failed: %s", exc, exc_info=exc)
        for part, frame, _ in jobs:
            self._failsafe(part, "ERROR", frame)

    def _complete(self, batch: _Batch) -> None:
        """Wait for ``batch``'s probabilities, answer every part (all RES first), then emit results."""
        jobs = batch.jobs
        spec = batch.slots.spec
        try:
            probs = batch.pending.wait()
            t2 = time.monotonic()
            self.model_ok = True
        except Exception as exc:  # noqa: BLE001 - any runtime error: the parts get a fail-safe ERROR
            self._infer_failed(jobs, exc)
            return
        n = len(jobs)
        self.stats["batches"] += 1
        self.stats["batched_parts"] += n
        self._per_part_s += 0.2 * ((t2 - batch.t_submitted) / n - self._per_part_s)
        decided: list[tuple[int, Verdict, float, float]] = []
        for i, (part, _frame, _t) in enumerate(jobs):
            td = time.monotonic()
            verdict = decide(probs[i], spec.labels, self.settings.decision)
            t3 = time.monotonic()
            if self._answer(part, verdict, None):
                decided.append((i, verdict, td, t3))
            # else: fail-safe already sent; a late result is never sent
        if decided and self._send is not None and self.yield_after_res:
            # Usually the RES is already on the wire (PlcLink.send_now). When it was queued, let the
            # PLC writer thread take the GIL and write it now, not after this thread built the
            # results (CPython hands the GIL over only every sys.getswitchinterval() s, 5 ms by
            # default, while a thread keeps running Python code).
            time.sleep(0)
        pre_ms = 1000.0 * (batch.t_submitted - batch.t_start) / n
        infer_ms = 1000.0 * (t2 - batch.t_submitted) / n
        model_info = self.model_info
        for i, verdict, td, t3 in decided:
            part, frame, t_got = jobs[i]
            lat = {
                "capture": 1000.0 * (t_got - part.t_trigger),
                "preprocess": pre_ms,
                "infer": infer_ms,
                "decide": 1000.0 * (t3 - td),
                "plc": 1000.0 * ((part.t_answer or t3) - part.t_trigger),
                "total": 1000.0 * (t3 - part.t_trigger),
            }
            r = InspectionResult(
                seq=part.seq, part_id=part.part_id, station_id=self.settings.station_id,
                trigger_ts=part.wall_trigger, verdict=verdict, capture_ts=frame.wall_time,
                decision_ts=time.time(), probabilities=np.array(probs[i], copy=True), labels=spec.labels,
                latency_ms=lat, source_id=frame.source_id, model=model_info, frame=frame.image,
                truth=frame.label, channel_order=spec.channel_order,
            )
            self._emit(r)

    def _run_outputs(self) -> None:
        background_thread()  # after the RES, never before it (edge.priority)
        while True:
            if self._stop.is_set():
                # what was queued when stop came, then out: triggers still arriving while the
                # link closes add fail-safe results without end (fresh-user test: a 5-s exit)
                for _ in range(self._outputs.qsize()):
                    try:
                        self._output(self._outputs.get_nowait())
                    except queue.Empty:
                        break
                return
            try:
                item = self._outputs.get(timeout=0.1)
            except queue.Empty:
                continue
            self._output(item)

    def _output(self, item: Any) -> None:
        """Hand one result (or status dict) to every sink; a failing sink is logged, not fatal."""
        for sink in self.sinks:
            try:
                if isinstance(item, dict):
                    fn = getattr(sink, "publish_status", None)
                    if fn:
                        fn(item)
                else:
                    sink.handle(item)
            except Exception:
                log.exception("output %s failed", type(sink).__name__)

    def _run_status(self) -> None:
        background_thread()
        period = self.settings.zmq.status_interval_ms / 1000.0
        while not self._stop.wait(period):
            st = self.status()
            try:
                self._outputs.put_nowait(st)
            except queue.Full:
                self.stats["outputs_dropped"] += 1
            for fn in self.status_sinks:
                try:
                    fn(st)
                except Exception:
                    log.exception("status sink failed")


class _Pending(Protocol):
    def wait(self) -> np.ndarray: ...


class _Done:
    """A synchronous inference's result, already there."""

    __slots__ = ("probs",)

    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs

    def wait(self) -> np.ndarray:
        return self.probs


class _Slots:
    """The input buffers of one backend and how batches run on it.

    Synchronous backends: one ``[max_batch,3,H,W] float32`` buffer, ``infer`` inline, depth 1.
    Backends with ``submit(slot, n)``, ``input_buffer(slot)`` and ``inflight_slots`` (TensorRT,
    ONNX Runtime): frames are preprocessed straight into the backend's input buffer of the next
    slot (page-locked for TensorRT) and the inference starts asynchronously; up to
    ``inflight_slots`` batches are in flight. A backend with ``inline_when_idle`` (ONNX Runtime)
    runs ``infer`` on that buffer instead when the caller asks for ``inline``.
    """

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.spec = backend.spec
        # Frame.prepared made for this model: fitted image or whole model tensor (edge.preprocess.Fitter)
        self.prepared_keys = (tensor_key(self.spec), fit_key(self.spec))
        self.max_batch = int(backend.max_batch)
        self.asynchronous = callable(getattr(backend, "submit", None)) and callable(
            getattr(backend, "input_buffer", None))
        self.depth = max(1, int(getattr(backend, "inflight_slots", 1))) if self.asynchronous else 1
        self.inline_ok = self.asynchronous and bool(getattr(backend, "inline_when_idle", False))
        # may run a lone trigger in a PLC reader thread (Inspector.on_trigger): ONNX Runtime and
        # synchronous backends. Not TensorRT: it pushes its CUDA context in any calling thread,
        # but its submit/wait from two threads has never run on a device; it keeps the queue.
        self.any_thread = self.inline_ok or not self.asynchronous
        if self.asynchronous:
            self._pre = [Preprocessor(self.spec, self.max_batch, buffer=backend.input_buffer(i))
                         for i in range(self.depth)]
        else:
            self._pre = [Preprocessor(self.spec, self.max_batch)]
        self._next = 0

    def submit(self, frames: list[np.ndarray], inline: bool = False) -> tuple[_Pending, float]:
        """Preprocess ``frames`` into the next slot and start the inference (synchronous backends,
        or ``inline`` with an ``inline_when_idle`` backend: run it). Returns the pending result
        (``.wait()`` gives probabilities ``[n,C] float32``) and the time.monotonic() s when
        preprocessing ended. The caller keeps at most ``depth`` batches in flight and waits for
        them in submission order (slots are used round-robin).

        Raises:
            PreprocessError: a bad frame. BackendError (or the backend's own errors): the model
                failed or refused the batch. Either way the slot stays free for the next call.
        """
        slot = self._next
        runs_here = not self.asynchronous or (inline and self.inline_ok)
        tensor = self._ready_tensor(frames) if runs_here else None
        if tensor is not None:  # a lone frame the capture thread made into the model tensor: no copy
            t_pre = time.monotonic()
            pending: _Pending = _Done(self.backend.infer(tensor))
        else:
            batch = self._pre[slot].batch(frames)
            t_pre = time.monotonic()
            if runs_here:
                pending = _Done(self.backend.infer(batch))
            else:
                pending = self.backend.submit(slot, len(frames))
        # Only now: a batch that failed (bad frame, refused submit) leaves its slot free for the
        # next one; advancing before would hand the next batch a slot still in flight.
        self._next = (slot + 1) % self.depth
        return pending, t_pre

    def _ready_tensor(self, frames: list[np.ndarray]) -> np.ndarray | None:
        """``[1,3,H,W] float32`` view of a single prepared model tensor (``Fitter(spec,
        tensor=True)``, the caller checked its key), else None."""
        if len(frames) != 1:
            return None
        f = frames[0]
        if f.dtype != np.float32 or f.shape != (3, *self.spec.input_size) or not f.flags.c_contiguous:
            return None
        return f[np.newaxis]


class _Batch:
    """Jobs whose inference was started; ``t_start`` before preprocessing, ``t_submitted`` when
    preprocessing ended (time.monotonic() s)."""

    __slots__ = ("jobs", "pending", "slots", "t_start", "t_submitted")

    def __init__(self, jobs: list[tuple[Part, Any, float]], pending: _Pending, t_start: float,
                 t_submitted: float, slots: _Slots) -> None:
        self.jobs = jobs
        self.pending = pending
        self.t_start = t_start
        self.t_submitted = t_submitted
        self.slots = slots
