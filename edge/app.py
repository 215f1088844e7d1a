"""Wiring: build one station (model, camera, PLC link, outputs, loop) from the settings tree.

This module only connects the pieces; each piece lives in its own module (docs/ARCHITECTURE.md).
The built-in ``demo`` values (model, camera source, PLC port) make ``edgeqc run`` work on a
machine with no hardware and no ../shared: the demo classifier shipped in ``edge/demo/``, parts
rendered by :mod:`edge.demo.synth`, and a PLC simulator on a pseudo-terminal pair.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.settings import Settings

log = logging.getLogger("edgeqc.app")

DEMO_MODEL = Path(__file__).resolve().parent / "demo" / "demo_model.onnx"


def resolve_model_path(settings: Settings) -> Settings:
    """Replace ``model.path = "demo"`` by the shipped demo classifier (returns a copy)."""
    if settings.model.path == "demo":
        s = settings.model_copy(deep=True)
        s.model.path = str(DEMO_MODEL)
        return s
    return settings


def open_backend_for(settings: Settings) -> Any:
    """Open the configured backend and warm it up (raises with a clear message on a missing/corrupt model).

    The first ONNX Runtime / TensorRT call allocates and tunes (hundreds of ms on a CPU); running
    it here, before the first trigger, keeps it out of the first part's deadline.
    """
    import numpy as np

    from edge.backends import open_backend
    from edge.backends.select import choose_cpu_model

    model = resolve_model_path(settings).model
    choice = choose_cpu_model(model, prefer=model.precision)
    if choice.path != Path(model.path):
        log.info("model: %s (%s)", choice.path.name, choice.reason)
    backend = open_backend(model.model_copy(update={"path": str(choice.path)}), spec=choice.spec)
    h, w = backend.spec.input_size
    for n in sorted({1, backend.max_batch}):
        backend.infer(np.zeros((n, 3, h, w), np.float32))
    return backend


class Station:
    """One inspection station: owns every resource; :meth:`close` releases them in order.

    Args:
        settings: the settings tree.
        plc_port: overrides ``plc.port`` (e.g. the edge end of a demo pty pair).
    """

    def __init__(self, settings: Settings, plc_port: str | None = None) -> None:
        from edge.capture import open_source
        from edge.inspection import Inspector
        from edge.preprocess import Fitter
        from edge.publish import Publisher

        self.settings = settings
        self._closers: list[Callable[[], Any]] = []
        self._reload_lock = threading.Lock()
        try:
            self.backend = open_backend_for(settings)
            self._closers.append(self._close_backend)
            demo_folder = lister = None
            if settings.camera.source == "demo":
                from edge.demo.synth import demo_folder as make_demo_folder
                from edge.demo.synth import replay_order

                demo_folder, lister = make_demo_folder(n=settings.camera.demo_parts), replay_order
            # Resize and float conversion run in the capture thread, off the trigger path
            # (bit-identical result; the trigger path hands the tensor to the model).
            self.source = open_source(settings.camera, channel_order=self.backend.spec.channel_order,
                                      demo_folder=demo_folder, lister=lister,
                                      prepare=Fitter(self.backend.spec, tensor=True))
            self._closers.append(self.source.close)
            sinks: list[Any] = []
            self.publisher = None
            if settings.zmq.enabled:
                self.publisher = Publisher(settings.zmq)
                self._closers.append(self.publisher.close)
                sinks.append(self.publisher)
            self.metrics = None
            if settings.metrics.enabled:
                from edge.metrics import MetricsSink

                self.metrics = MetricsSink(settings.metrics, station_id=settings.station_id)
                self._closers.append(self.metrics.close)
                sinks.append(self.metrics)
            if settings.archive.enabled:
                from edge.archive import RejectArchive

                self.archive = RejectArchive(settings.archive)
                self._closers.append(self.archive.close)
                sinks.append(self.archive)
            self.link = None
            send = None
            if settings.plc.enabled:
                from edge.plc.link import PlcLink

                self.link = PlcLink(settings.plc, on_trigger=self._on_trigger, on_state=self._on_plc_state,
                                    health=self._healthy, port=plc_port)
                send = self.link.send_now
            self.inspector = Inspector(settings, self.backend, self.source, send_telegram=send, sinks=sinks)
            if self.metrics is not None:
                self.metrics.bind(self.inspector)
                if self.link is not None:
                    self.metrics.watch_plc(self.link)
        except BaseException:
            self.close()
            raise

    # callbacks from the PLC link threads; the inspector exists once the link is started
    def _on_trigger(self, trigger: Any, t_arrival: float) -> Callable[[], None] | None:
        return self.inspector.on_trigger(trigger.part_id, t_arrival)  # work for the link: see PlcLink

    def _on_plc_state(self, state: str) -> None:
        if hasattr(self, "inspector"):
            self.inspector.plc_state = state

    def _healthy(self) -> bool:
        return hasattr(self, "inspector") and self.inspector.healthy()

    def start(self) -> Station:
        if self.metrics is not None:
            self.metrics_port = self.metrics.start_http(self.settings.metrics.host, self.settings.metrics.port)
            log.info("metrics on http://%s:%d/metrics", self.settings.metrics.host, self.metrics_port)
        self.source.start()
        self.inspector.start()
        if self.link is not None:
            self.link.start()
        return self

    def reload(self, config: str | None) -> str | None:
        """SIGHUP: load the config and model beside the running ones and swap between parts.

        Returns None on success, else why the running model was kept (logged, published in the
        ``status`` topic, counted in metrics). Sections other than ``model`` and ``decision``
        need a restart; a change there is logged and ignored.
        """
        with self._reload_lock:  # one at a time, each reading the file anew: the last SIGHUP wins
            return self._reload(config)

    def _reload(self, config: str | None) -> str | None:
        from edge.settings import load_settings

        try:
            new = load_settings(config)
            changed: list[str] = []  # dotted names of the fields a restart would apply
            for k in type(new).model_fields:
                a, b = getattr(new, k), getattr(self.settings, k)
                if k in ("model", "decision") or a == b:
                    continue
                fields = getattr(type(a), "model_fields", None)
                changed += [f"{k}.{f}" for f in fields if getattr(a, f) != getattr(b, f)] if fields else [k]
            if changed:
                log.warning("reload: %s changed; those take effect only after a restart", ", ".join(changed))
            backend = open_backend_for(new)
            try:
                self.inspector.request_reload(backend, new.decision)
            except Exception:
                backend.close()
                raise
            from edge.preprocess import Fitter

            self.source.prepare = Fitter(backend.spec, tensor=True)  # frames made for the old model are ignored
        except Exception as exc:  # noqa: BLE001 - any failure keeps the running model
            why = f"reload failed, keeping {self.inspector.model_info.name}: {exc}"
            log.error(why)
            self.inspector.last_reload_error = why
            self.inspector.stats["reload_failures"] += 1  # metrics read this counter at scrape time
            return why
        self.inspector.last_reload_error = None
        log.info("reload: new model %s loaded, swapping between parts", backend.model_path)
        return None

    def stop(self, timeout: float = 5.0) -> dict[str, Any]:
        """Stop taking triggers, answer all triggered parts, flush outputs; returns the summary dict."""
        from edge.summary import capture_summary

        summary = self.inspector.stop(timeout)
        summary["capture"] = capture_summary(self.source)
        link = getattr(self, "link", None)
        self.close()
        if link is not None:  # after close: the flush of the last telegrams is counted
            st = link.stats
            keys = ("telegrams_sent", "heartbeats_sent", "dropped_results", "dropped", "write_errors", "naks_sent",
                    "reconnects")
            summary["plc_link"] = {k: st[k] for k in keys}
        return summary

    def _close_backend(self) -> None:
        """Close the backend the inspector runs now (after SIGHUP reloads, not the first one) and
        the first one (idempotent)."""
        insp = getattr(self, "inspector", None)
        if insp is not None:
            insp.discard_pending_reload()
        current = insp.backend if insp is not None else None
        if current is not None and current is not self.backend:
            current.close()
        self.backend.close()

    def close(self) -> None:
        link = getattr(self, "link", None)
        if link is not None:
            try:
                link.close()
            except Exception:
                log.exception("closing the PLC link failed")
            self.link = None
        while self._closers:
            fn = self._closers.pop()
            try:
                fn()
            except Exception:
                log.exception("closing %s failed", fn)


def run_until_signal(station: Station, stop_when: threading.Event | None = None,
                     on_reload: Callable[[], None] | None = None,
                     on_started: Callable[[], None] | None = None,
                     on_stopping: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run until SIGINT/SIGTERM (or ``stop_when`` is set), then drain and return the summary."""
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    if on_reload is not None:  # load off the signal handler and off the inspection thread
        old[signal.SIGHUP] = signal.signal(
            signal.SIGHUP, lambda *_: threading.Thread(target=on_reload, name="edgeqc-reload", daemon=True).start())
    try:
        station.start()
        if on_started is not None:
            on_started()
        while not stop.is_set():
            if stop_when is not None and stop_when.is_set():
                break
            stop.wait(0.1)
    finally:
        if on_stopping is not None:
            on_stopping()
        summary = station.stop()
        for s, h in old.items():
            signal.signal(s, h)
    return summary


def wait_replay_done(station: Station, settle_s: float = 0.5) -> None:
    """Block until a free-run replay source is exhausted and outputs had time to flush."""
    station.inspector.finished.wait()
    time.sleep(settle_s)
