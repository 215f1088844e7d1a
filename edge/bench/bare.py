"""The "bare" reference of ``edgeqc bench``: an ONNX Runtime session on pre-made tensors.

Same session options as :class:`edge.backends.onnxruntime.OnnxRuntimeBackend` (CPU execution
provider, ``model.intra_op_threads``), called directly with ``session.run`` on tensors that were
decoded and preprocessed beforehand: what the model costs with nothing around it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.bench.measure import STEADY_SKIP, Timing, cpu_seconds
from edge.model_spec import ModelSpec
from edge.preprocess import Preprocessor
from edge.settings import ModelSettings


@dataclass
class Timed(Timing):
    """One block: ``n`` calls; wall and CPU seconds of the whole block; per-call latencies in ms
    (for :meth:`BareSession.paced`: response times from the scheduled instant; ``call_ms``: the
    calls alone)."""

    latencies_ms: list[float] = field(default_factory=list)
    call_ms: list[float] = field(default_factory=list)


def make_tensors(images: Sequence[np.ndarray], spec: ModelSpec) -> list[np.ndarray]:
    """``[1,3,H,W] float32`` copies of each preprocessed image."""
    pre = Preprocessor(spec, 1)
    return [pre.one(img).copy() for img in images]


class BareSession:
    """``onnxruntime.InferenceSession`` with the backend's options.

    Raises:
        RuntimeError: ONNX Runtime cannot load the model (its own exception types).
    """

    def __init__(self, model: str | Path, settings: ModelSettings, spec: ModelSpec) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        from edge.backends.onnxruntime import intra_op_threads

        opts.intra_op_num_threads = intra_op_threads(settings.intra_op_threads)
        opts.log_severity_level = 3
        self.path = Path(model)
        self.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self._feed_name = self.session.get_inputs()[0].name
        self._outputs = [self.session.get_outputs()[0].name]

    def run(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.session.run(self._outputs, {self._feed_name: x})[0]
        return out

    def warm(self, tensors: Sequence[np.ndarray], n: int = 3) -> None:
        for i in range(n):
            self.run(tensors[i % len(tensors)])

    def tight(self, tensors: Sequence[np.ndarray], n: int, start: int = 0) -> Timed:
        """``n`` back-to-back calls on ``tensors`` (cycling from ``start``); ``steady_s`` runs from
        the end of call ``STEADY_SKIP`` to the end of the last, as the pipeline's block is cut."""
        lat: list[float] = []
        t_mark = None
        c0, t0 = cpu_seconds(), time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            self.run(tensors[(start + i) % len(tensors)])
            end = time.perf_counter()
            lat.append(1000.0 * (end - t))
            if i + 1 == STEADY_SKIP:
                t_mark = end
        t1 = time.perf_counter()
        steady_s = t1 - t_mark if n > STEADY_SKIP and t_mark is not None else None
        return Timed(n, t1 - t0, cpu_seconds() - c0, steady_s=steady_s,
                     steady_n=n - STEADY_SKIP if steady_s is not None else 0, latencies_ms=lat)

    def paced(self, tensors: Sequence[np.ndarray], n: int, rate_hz: float, start: int = 0) -> Timed:
        """``n`` calls scheduled at ``rate_hz`` (the trigger rate: same duty cycle as the trigger run).

        ``latencies_ms`` is each call's *response time*: a call on time is timed from its start; a
        call whose scheduled instant (``t0 + i / rate_hz``) passed while the previous call was
        still running is timed from that instant. As a trigger's latency runs from the ``TRG``, a call that starts late because the
        previous one stalled past its slot carries that wait, as the station's next part does.
        Timing only the call would leave those waits out ("coordinated omission": the wrk2 README,
        github.com/giltene/wrk2; YCSB measures from the scheduled start for the same reason,
        brianfrankcooper/YCSB#731) and make the reference's tail shorter than the station's by
        construction. The loop's own wake-up lateness after ``sleep`` is not counted, as the
        simulator takes a trigger's time when it writes it, not when it was due (before this
        was settled, runs S, T, U counted it: ~0.15 ms at p50). ``call_ms``
        keeps the call alone (service time).
        """
        lat: list[float] = []
        calls: list[float] = []
        period = 1.0 / rate_hz
        c0, t0 = cpu_seconds(), time.perf_counter()
        for i in range(n):
            due = t0 + i * period
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            t = time.perf_counter()
            # on time: from the call's start (after the wake-up); behind a call that overran
            # this one's slot: from when it was due (the wait behind it counts)
            ready = t if wait > 0 else due
            self.run(tensors[(start + i) % len(tensors)])
            end = time.perf_counter()
            calls.append(1000.0 * (end - t))
            lat.append(1000.0 * (end - ready))
        return Timed(n, time.perf_counter() - t0, cpu_seconds() - c0, latencies_ms=lat, call_ms=calls)
