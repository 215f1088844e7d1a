"""A free-run station fed block by block from memory: the "full pipeline" of ``edgeqc bench``.

Same components as :class:`edge.app.Station` (the :class:`~edge.inspection.Inspector`, a
:class:`~edge.plc.link.PlcLink` on a direct pty whose master a listen-only PLC simulator reads in a
process of its own (:mod:`edge.bench.plc_process`), the
ZeroMQ :class:`~edge.publish.Publisher`, :class:`~edge.metrics.MetricsSink`,
:class:`~edge.archive.RejectArchive`), wired the same way, but the frames come from a gated
:class:`~edge.capture.memory.MemorySource` (decoded beforehand, as a camera delivers them), so a
block of N frames can be timed while the station keeps running between blocks, and bare blocks
can be interleaved with pipeline blocks. Each sink is wrapped to time its ``handle``. The
source's capture thread does the resize and float conversion (``prepare``), up to 2 frames ahead,
like a camera grabber.
"""

from __future__ import annotations

import logging
import threading
import time
from array import array
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge.bench.measure import STEADY_SKIP, Timing, cpu_seconds
from edge.capture.memory import MemoryItem, MemorySource
from edge.settings import Settings

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger("edgeqc.bench")


def samples() -> defaultdict[str, array[float]]:
    """Per-key float arrays (8 bytes a value: the bench's own bookkeeping must not look like a
    leak in the RSS it measures)."""
    return defaultdict(lambda: array("d"))


class TimedSink:
    """Wraps a sink: ``handle`` durations in ms are appended to ``times[name]``."""

    def __init__(self, name: str, sink: Any, times: dict[str, array[float]]) -> None:
        self.name, self.sink, self.times = name, sink, times

    def handle(self, result: Any) -> None:
        t = time.perf_counter()
        self.sink.handle(result)
        self.times[self.name].append(1000.0 * (time.perf_counter() - t))

    def __getattr__(self, item: str) -> Any:  # publish_status etc.
        return getattr(self.sink, item)


class Counter:
    """Last sink: counts results; :meth:`wait` returns when ``expect`` results arrived."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self.count = 0
        self.target = 0
        self.t_last = 0.0
        self.mark_at = 0  # count at which t_mark is taken (the end of a block's fill)
        self.t_mark = 0.0
        self.stages = samples()  # stage -> ms per part; "edge_overhead" = plc - infer
        self.verdicts: dict[str, int] = defaultdict(int)

    def expect(self, n: int, mark: int = 0) -> None:
        """Wait for ``n`` more results; take ``t_mark`` when the ``mark``-th of them arrives."""
        with self._cv:
            self.target = self.count + n
            self.mark_at = self.count + mark if mark else 0

    def handle(self, result: Any) -> None:
        with self._cv:
            self.count += 1
            self.t_last = time.perf_counter()
            if self.count == self.mark_at:
                self.t_mark = self.t_last
            lat = result.latency_ms
            for k, v in lat.items():
                self.stages[k].append(v)
            if "plc" in lat and "infer" in lat:
                self.stages["edge_overhead"].append(lat["plc"] - lat["infer"])
            self.verdicts["pass" if result.verdict.passed else "fail"] += 1
            if self.count >= self.target:
                self._cv.notify_all()

    def wait(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._cv:
            while self.count < self.target:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
            return True


@dataclass
class Block(Timing):
    """One pipeline block: ``n`` frames released at once; wall time until the last result reached
    the last sink, process CPU time; per-part stage latencies and per-sink handle times (ms)."""

    stages: dict[str, list[float]] = field(default_factory=dict)
    sinks: dict[str, list[float]] = field(default_factory=dict)


class FreeRunRig:
    """The running free-run station (see module docstring). Use as a context manager.

    Args:
        settings: bench settings (``plc.mode`` is forced to ``free_run``).
        backend: an open backend (ONNX Runtime, or noop for the overhead item).
        items: decoded frames to cycle through.
        plc: put the PLC link on a direct pty (RES,<seq> telegrams read by a listen-only simulator
            in a child process).
        prepare: the source's capture thread turns each frame into the model tensor
            (``edge.preprocess.Fitter(spec, tensor=True)``), as :class:`edge.app.Station` does.
    """

    def __init__(self, settings: Settings, backend: Any, items: Sequence[MemoryItem], *, plc: bool = True,
                 prepare: bool = True) -> None:
        from edge.archive import RejectArchive
        from edge.inspection import Inspector
        from edge.metrics import MetricsSink
        from edge.publish import Publisher

        s = settings.model_copy(update={"plc": settings.plc.model_copy(update={"mode": "free_run"})})
        self.settings = s
        self.times = samples()
        self._closers: list[Any] = []
        self.sim = self.link = None
        self.plc_report: Any = None
        try:
            self.source = MemorySource(items, gated=True)
            if prepare:  # resize + conversion in the capture thread, as Station does
                from edge.preprocess import Fitter

                self.source.prepare = Fitter(backend.spec, tensor=True)
            self.publisher = Publisher(s.zmq)
            self._closers.append(self.publisher.close)
            self.metrics = MetricsSink(s.metrics, station_id=s.station_id)
            self._closers.append(self.metrics.close)
            self.archive = RejectArchive(s.archive)
            self._closers.append(self.archive.close)
            send = None
            if plc:
                from edge.bench.plc_process import PlcProcess
                from edge.plc.link import PlcLink

                # the PLC in a process of its own on a direct pty (no socat relay): as a thread here
                # it took CPU and the GIL from the pipeline it measures
                self.sim = PlcProcess(listen=True)
                self._closers.append(self.sim.close)
                self._closers.append(self._finish_plc)
                self.link = PlcLink(s.plc, on_trigger=lambda *_: None, port=self.sim.port,
                                    health=lambda: self.inspector.healthy())
                send = self.link.send_now
            self.counter = Counter()
            sinks: list[Any] = [TimedSink("publish", self.publisher, self.times), TimedSink("archive", self.archive, self.times),
                     TimedSink("metrics", self.metrics, self.times), self.counter]
            self.inspector = Inspector(s, backend, self.source, send_telegram=send, sinks=sinks)
            self.metrics.bind(self.inspector)
            self.metrics.watch_archive(self.archive)
            self.metrics.watch_publisher(self.publisher)
            if self.link is not None:
                self.metrics.watch_plc(self.link)
                self.link.start()
                self._closers.append(self.link.close)
            self.source.start()
            self.inspector.start()
        except BaseException:
            self.close()
            raise

    def block(self, n: int, timeout: float = 300.0) -> Block:
        """Release ``n`` frames and wait until all ``n`` results went through every sink, then
        until the archive wrote what it was handed (its writer thread lags a record or two: that
        work belongs to this block, not to the bare block after it). ``wall_s``: release -> last
        result; ``steady_s``: ``STEADY_SKIP``-th result -> last; ``cpu_s``: to the archive's end.

        Raises:
            TimeoutError: not all results arrived within ``timeout`` s.
        """
        for v in self.times.values():
            del v[:]
        lat0 = {k: len(v) for k, v in self.counter.stages.items()}
        steady = n > STEADY_SKIP
        self.counter.expect(n, mark=STEADY_SKIP if steady else 0)
        c0, t0 = cpu_seconds(), time.perf_counter()
        self.source.release(n)
        if not self.counter.wait(timeout):
            raise TimeoutError(f"free-run pipeline: not all {n} results within {timeout:.0f} s")
        wall = self.counter.t_last - t0
        steady_s = self.counter.t_last - self.counter.t_mark if steady else None
        self.archive.flush(timeout)
        cpu = cpu_seconds() - c0
        stages = {k: v[lat0.get(k, 0):].tolist() for k, v in self.counter.stages.items()}
        return Block(n, wall, cpu, steady_s=steady_s, steady_n=n - STEADY_SKIP if steady else 0,
                     stages=stages, sinks={k: v.tolist() for k, v in self.times.items()})

    def close(self) -> dict[str, Any]:
        """Stop everything; returns inspector stats and PLC/simulator counts."""
        out: dict[str, Any] = {}
        insp = getattr(self, "inspector", None)
        if insp is not None:
            self.source.finish()
            out["summary"] = insp.stop()
            out["stats"] = dict(insp.stats)
        src = getattr(self, "source", None)
        if src is not None:
            src.close()
        while self._closers:  # the link flushes its queue before the simulator stops reading
            fn = self._closers.pop()
            try:
                fn()
            except Exception:  # closing is best effort
                log.debug("bench: closing %s failed", fn, exc_info=True)
        if self.plc_report is not None:
            out["plc_free_run_results"] = self.plc_report.free_run_results
        return out

    def _finish_plc(self) -> None:
        if self.sim is not None:
            self.plc_report = self.sim.finish()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
