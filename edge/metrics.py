"""Prometheus metrics of one station (prometheus-client, a registry of our own).

:class:`MetricsSink` is an output sink (``handle(result)`` from the outputs thread) that counts
parts, passes, rejects by reason and fail-safe answers by cause, and observes the latencies
carried in each result. Counters kept by other components (camera and PLC reconnects, ZeroMQ and
output-queue drops, archive bytes, reloads) are read from them at scrape time (:meth:`bind`,
:meth:`watch_plc`, :meth:`watch_archive`, :meth:`watch_publisher`), so nobody counts twice; loops
without such counters call the ``inc_*`` / ``set_*_state`` functions instead (they add up).

Metric names follow the Prometheus conventions (base units: seconds, bytes; ``_total`` for
counters). The full list is in docs/service.md and :data:`METRIC_NAMES`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger("edgeqc.metrics")

FAILSAFE_CAUSES = ("TIMEOUT", "NO_FRAME", "ERROR")
STAGES = ("capture", "preprocess", "infer", "decide", "total")
# Per-stage buckets in seconds (0.5 ms .. 1 s); end-to-end buckets around the default 250 ms deadline.
STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
E2E_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1.0)
STATES = {
    "camera": ("ok", "lost"),
    "plc": ("ok", "lost", "disabled"),
    "model": ("ok", "fault"),
}

METRIC_NAMES = (
    "edgeqc_parts_total", "edgeqc_passes_total", "edgeqc_rejects_total", "edgeqc_failsafe_total",
    "edgeqc_stage_latency_seconds", "edgeqc_trigger_to_telegram_seconds",
    "edgeqc_camera_reconnects_total", "edgeqc_capture_frames_total", "edgeqc_capture_corrupt_frames_total",
    "edgeqc_capture_dropped_stale_frames_total", "edgeqc_serial_reconnects_total",
    "edgeqc_plc_results_not_sent_total",
    "edgeqc_plc_write_errors_total", "edgeqc_zmq_dropped_total",
    "edgeqc_outputs_dropped_total", "edgeqc_reloads_total", "edgeqc_infer_errors_total",
    "edgeqc_camera_state", "edgeqc_plc_state", "edgeqc_model_state", "edgeqc_model_info", "edgeqc_station_info",
    "edgeqc_archive_bytes", "edgeqc_archive_records", "edgeqc_archive_queued", "edgeqc_archive_written_total",
    "edgeqc_archive_dropped_total", "edgeqc_archive_errors_total", "edgeqc_archive_deleted_total",
)


def _stat(obj: Any, key: str) -> int:
    """``obj.stats[key]`` as int; 0 when missing (a component that does not count it)."""
    try:
        st = obj.stats
        return int(st.get(key, 0) or 0) if isinstance(st, Mapping) else 0
    except Exception:  # noqa: BLE001  (a scrape must never fail because one component did)
        return 0


class _StationCollector(Collector):
    """Yields, at scrape time, the values other components own (see :class:`MetricsSink`)."""

    def __init__(self, sink: MetricsSink) -> None:
        self.sink = sink

    def collect(self) -> Iterable[Metric]:
        s = self.sink
        with s._lock:
            extra = dict(s._extra)
            states = dict(s._states)
            model = dict(s._model)
            inspector, plcs, archives, pubs = s._inspector, list(s._plcs), list(s._archives), list(s._pubs)
        source = getattr(inspector, "source", None) if inspector is not None else None
        istats: Mapping[str, Any] = {}
        if inspector is not None:
            try:
                istats = dict(inspector.stats)
                st = inspector.status()
                states.update({k: st[k] for k in STATES if k in st})
                mi = inspector.model_info
                model = {"name": mi.name, "sha256": mi.sha256, "precision": mi.precision, "backend": mi.backend}
            except Exception:
                log.debug("metrics: reading the inspector failed", exc_info=True)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        yield counter("edgeqc_camera_reconnects", "Camera reopen attempts after a loss.",
                      extra["camera_reconnects"] + (_stat(source, "reconnects") if source is not None else 0))
        yield counter("edgeqc_capture_frames", "Frames the camera/replay source handed to the loop.",
                      _stat(source, "frames"))
        yield counter("edgeqc_capture_corrupt_frames", "Unreadable image files (truncated, not an image) a "
                      "folder replay skipped; each is logged by name.", _stat(source, "corrupt"))
        yield counter("edgeqc_capture_dropped_stale_frames", "Live frames replaced by a newer one before "
                      "anyone used them (normal in trigger mode).", _stat(source, "dropped_stale"))
        yield counter("edgeqc_serial_reconnects", "PLC serial port reopened after a loss.",
                      extra["serial_reconnects"] + sum(_stat(p, "reconnects") for p in plcs))
        yield counter("edgeqc_plc_results_not_sent", "RES telegrams not written to the PLC (port lost, write "
                      "timeout, queue full); each is logged with its part id.",
                      sum(_stat(p, "dropped_results") for p in plcs))
        yield counter("edgeqc_plc_write_errors", "Failed or timed-out writes to the PLC port.",
                      sum(_stat(p, "write_errors") for p in plcs))
        yield counter("edgeqc_zmq_dropped", "ZeroMQ messages dropped (subscriber send queue full).",
                      extra["zmq_dropped"] + sum(_stat(p, "dropped") for p in pubs))
        yield counter("edgeqc_outputs_dropped", "Results not given to the outputs (outputs queue full).",
                      extra["outputs_dropped"] + int(istats.get("outputs_dropped", 0)))
        yield counter("edgeqc_infer_errors", "Batches whose inference raised (answered fail-safe ERROR).",
                      int(istats.get("infer_errors", 0)))
        rel = CounterMetricFamily("edgeqc_reloads", "Model/config reloads (SIGHUP) by outcome.", labels=["outcome"])
        rel.add_metric(["ok"], extra["reloads_ok"] + int(istats.get("reloads", 0)))
        rel.add_metric(["failed"], extra["reloads_failed"] + int(istats.get("reload_failures", 0)))
        yield rel

        for what, allowed in STATES.items():
            gauge = GaugeMetricFamily(f"edgeqc_{what}_state", f"{what} state: 1 for the current state.",
                                      labels=["state"])
            cur = states.get(what)
            for state in allowed:
                gauge.add_metric([state], 1.0 if cur == state else 0.0)
            yield gauge

        if model:
            info = InfoMetricFamily("edgeqc_model", "The model answering now.")
            info.add_metric([], {k: str(v) for k, v in model.items()})
            yield info
        info = InfoMetricFamily("edgeqc_station", "This station.")
        info.add_metric([], {"station_id": s.station_id, "version": s.version})
        yield info

        if archives:
            st = [a.stats for a in archives]

            def tot(key: str) -> int:
                return sum(int(x.get(key, 0) or 0) for x in st)

            yield GaugeMetricFamily("edgeqc_archive_bytes", "Frame+JSON bytes in the reject archive.",
                                    value=tot("bytes"))
            yield GaugeMetricFamily("edgeqc_archive_records", "Records in the reject archive.", value=tot("records"))
            yield GaugeMetricFamily("edgeqc_archive_queued", "Records waiting to be written.", value=tot("queued"))
            yield counter("edgeqc_archive_written", "Records written to the archive.", tot("written"))
            fam = CounterMetricFamily("edgeqc_archive_dropped", "Records not archived, by cause.", labels=["cause"])
            for cause in ("queue_full", "error", "shutdown"):
                fam.add_metric([cause], tot(f"dropped_{cause}"))
            yield fam
            fam = CounterMetricFamily("edgeqc_archive_errors", "Archive disk/index errors, by kind.", labels=["kind"])
            for kind in ("enospc", "io", "index", "encode"):
                fam.add_metric([kind], tot(f"errors_{kind}"))
            yield fam
            fam = CounterMetricFamily("edgeqc_archive_deleted", "Records deleted by retention, by cause.",
                                      labels=["cause"])
            for cause in ("bytes", "age", "enospc"):
                fam.add_metric([cause], tot(f"deleted_{cause}"))
            yield fam


class MetricsSink:
    """Station metrics in a registry of its own, plus the ``/metrics`` HTTP endpoint.

    Args:
        settings: ``settings.metrics`` (host/port used by :meth:`start_http` defaults); optional.
        station_id: label value of ``edgeqc_station_info``.
        process_metrics: also register the process (CPU, RSS, open fds), platform and GC
            collectors — useful to spot leaks on a months-long run.
    """

    def __init__(self, settings: Any = None, station_id: str = "station-1", *, process_metrics: bool = True) -> None:
        self.settings = settings
        self.station_id = station_id
        self.version = _version()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._lock = threading.Lock()
        self._extra = dict.fromkeys(("camera_reconnects", "serial_reconnects", "zmq_dropped", "outputs_dropped",
                                     "reloads_ok", "reloads_failed"), 0)
        self._states: dict[str, str] = {}
        self._model: dict[str, str] = {}
        self._inspector: Any = None
        self._plcs: list[Any] = []
        self._archives: list[Any] = []
        self._pubs: list[Any] = []
        self._server: Any = None
        self._server_thread: threading.Thread | None = None

        self.parts = Counter("edgeqc_parts", "Parts answered (inspected or fail-safe).", registry=r)
        self.passes = Counter("edgeqc_passes", "Parts with verdict pass.", registry=r)
        self.rejects = Counter("edgeqc_rejects", "Parts with verdict fail, by reason (defect class, "
                               "'uncertain', or the fail-safe cause).", ["reason"], registry=r)
        self.failsafe = Counter("edgeqc_failsafe", "Fail-safe answers, by cause.", ["cause"], registry=r)
        for cause in FAILSAFE_CAUSES:
            self.failsafe.labels(cause)
        self.stage_latency = Histogram("edgeqc_stage_latency_seconds",
                                       "Per-stage latency: capture (trigger -> frame), preprocess, infer, "
                                       "decide (per part), total (trigger -> decision).",
                                       ["stage"], buckets=STAGE_BUCKETS, registry=r)
        for stage in STAGES:
            self.stage_latency.labels(stage)
        self.e2e_latency = Histogram("edgeqc_trigger_to_telegram_seconds",
                                     "End to end: TRG received -> RES telegram handed to the PLC writer.",
                                     buckets=E2E_BUCKETS, registry=r)
        r.register(_StationCollector(self))
        if process_metrics:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

    # ------------------------------------------------------------------ sink API
    def handle(self, result: Any) -> None:
        """Count one result (``result.to_message()``, schema v1); never raises on odd content."""
        msg = result.to_message()
        self.parts.inc()
        if msg.get("verdict") == "pass":
            self.passes.inc()
        else:
            self.rejects.labels(str(msg.get("reason") or msg.get("label") or "unknown")).inc()
        cause = msg.get("failsafe")
        if cause:
            self.failsafe.labels(str(cause)).inc()
        lat = msg.get("latency_ms") or {}
        for stage in STAGES:
            v = lat.get(stage)
            if isinstance(v, (int, float)):
                self.stage_latency.labels(stage).observe(v / 1000.0)
        v = lat.get("plc")
        if isinstance(v, (int, float)):
            self.e2e_latency.observe(v / 1000.0)
        model = msg.get("model")
        if isinstance(model, Mapping):
            with self._lock:
                if self._inspector is None and model != self._model:
                    self._model = {k: str(model.get(k, "")) for k in ("name", "sha256", "precision", "backend")}

    def close(self, timeout: float = 1.0) -> None:
        """Stop the HTTP endpoint (if started)."""
        srv, self._server = self._server, None
        if srv is not None:
            srv.shutdown()
            srv.server_close()
            if self._server_thread is not None:
                self._server_thread.join(timeout)

    # ------------------------------------------------------------------ functions the loop calls
    def observe_failsafe(self, cause: str) -> None:
        """Count a fail-safe answer that is *not* delivered as a result (``handle`` already counts
        results whose ``failsafe`` is set; the current loop emits one for every fail-safe)."""
        self.failsafe.labels(cause).inc()

    def set_camera_state(self, state: str) -> None:
        self._set_state("camera", state)

    def set_plc_state(self, state: str) -> None:
        self._set_state("plc", state)

    def set_model_state(self, state: str) -> None:
        self._set_state("model", state)

    def _set_state(self, what: str, state: str) -> None:
        if state not in STATES[what]:
            raise ValueError(f"{what} state {state!r}: expected one of {STATES[what]}")
        with self._lock:
            self._states[what] = state

    def set_model_info(self, name: str, sha256: str, precision: str, backend: str) -> None:
        with self._lock:
            self._model = {"name": name, "sha256": sha256, "precision": precision, "backend": backend}

    def inc_camera_reconnects(self, n: int = 1) -> None:
        self._inc("camera_reconnects", n)

    def inc_serial_reconnects(self, n: int = 1) -> None:
        self._inc("serial_reconnects", n)

    def inc_zmq_dropped(self, n: int = 1) -> None:
        self._inc("zmq_dropped", n)

    def inc_outputs_dropped(self, n: int = 1) -> None:
        self._inc("outputs_dropped", n)

    def observe_reload(self, ok: bool) -> None:
        self._inc("reloads_ok" if ok else "reloads_failed", 1)

    def _inc(self, key: str, n: int) -> None:
        with self._lock:
            self._extra[key] += n

    # ------------------------------------------------------------------ components read at scrape time
    def bind(self, inspector: Any) -> None:
        """Read state from the inspector at every scrape: camera/PLC/model state (``status()``),
        model info (``model_info``), outputs drops, reloads and inference errors (``stats``),
        camera reconnects, frames, corrupt and stale frames (``source.stats``); archives and
        publishers among ``inspector.sinks`` are watched too."""
        with self._lock:
            self._inspector = inspector
        for sink in getattr(inspector, "sinks", []):
            name = type(sink).__name__
            if name == "RejectArchive":
                self.watch_archive(sink)
            elif name == "Publisher":
                self.watch_publisher(sink)

    def watch_plc(self, link: Any) -> None:
        """Add ``link.stats["reconnects"]`` (``PlcLink``) to ``edgeqc_serial_reconnects_total``."""
        with self._lock:
            self._plcs.append(link)

    def watch_archive(self, archive: Any) -> None:
        """Export ``archive.stats`` (``RejectArchive``) as the ``edgeqc_archive_*`` metrics."""
        with self._lock:
            if archive not in self._archives:
                self._archives.append(archive)

    def watch_publisher(self, publisher: Any) -> None:
        """Add ``publisher.stats["dropped"]`` (``Publisher``) to ``edgeqc_zmq_dropped_total``."""
        with self._lock:
            if publisher not in self._pubs:
                self._pubs.append(publisher)

    # ------------------------------------------------------------------ exposition
    def render(self) -> bytes:
        """The exposition text of the registry (what ``GET /metrics`` returns)."""
        return generate_latest(self.registry)

    def start_http(self, host: str | None = None, port: int | None = None) -> int:
        """Serve ``/metrics`` with prometheus-client's threaded HTTP server (daemon thread).

        Args:
            host: bind address; default ``settings.host`` (loopback, ``127.0.0.1``).
            port: TCP port, 0 = any free port; default ``settings.port`` (9108).

        Returns:
            The bound TCP port.

        Raises:
            OSError: the address cannot be bound (message names host and port).
            RuntimeError: already started.
        """
        from prometheus_client import start_http_server

        if self._server is not None:
            raise RuntimeError("metrics HTTP endpoint already started")
        host = host if host is not None else getattr(self.settings, "host", "127.0.0.1")
        port = port if port is not None else getattr(self.settings, "port", 9108)
        try:
            self._server, self._server_thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise OSError(exc.errno, f"metrics.host/port = {host}:{port}: cannot bind ({exc.strerror})") from None
        bound = int(self._server.server_address[1])
        log.info("serving http://%s:%d/metrics", host, bound)
        return bound


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("edgeqc")
    except Exception:  # noqa: BLE001  (not installed as a distribution: running from a checkout)
        return "0+checkout"


def scrape_values(text: str) -> dict[str, float]:
    """Parse exposition text into ``{'name{label="v",...}': value}`` (for tests and tools)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out
