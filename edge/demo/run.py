"""``edgeqc run`` / ``edgeqc demo``: start a station, optionally with the built-in PLC simulator.

``plc.port = "demo"`` puts a PLC simulator (:class:`edge.plc.simulator.PlcSimulator`) on the other
end of a pseudo-terminal pair, so the real serial link code runs with no hardware. The demo also
subscribes to its own ZeroMQ stream and reports what arrived, so one command shows the whole chain.
``edgeqc run`` on the demo defaults (``camera.source = plc.port = "demo"``) replays the demo parts
in a loop (a demo line keeps running) unless the config sets ``camera.loop`` itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge.settings import Settings, load_settings

log = logging.getLogger("edgeqc.demo")


def demo_settings(config: str | None = None) -> Settings:
    """Demo defaults (built-in model, camera and PLC) under an optional TOML file and env vars.

    The archive goes to a temporary folder unless the file or the environment sets one, and
    metrics bind an ephemeral port, so a demo never collides with a running station.
    """
    s = load_settings(config)
    if "path" not in s.archive.model_fields_set:
        s.archive.path = str(Path(tempfile.gettempdir()) / f"edgeqc-demo-archive-{os.getuid()}")
    if "port" not in s.metrics.model_fields_set:
        s.metrics.port = 0
    return s


class _ZmqCounter:
    """A SUB on the station's own endpoint: counts results, rejects and reject JPEGs received."""

    def __init__(self, endpoint: str) -> None:
        import zmq

        self._zmq = zmq
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.connect(endpoint)
        for topic in (b"result", b"reject"):
            self._sock.setsockopt(zmq.SUBSCRIBE, topic)
        self.results = self.rejects = self.jpeg_bytes = 0
        self.seqs: list[int] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, name="edgeqc-demo-sub", daemon=True)
        self._t.start()

    def _run(self) -> None:
        poller = self._zmq.Poller()
        poller.register(self._sock, self._zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            parts = self._sock.recv_multipart()
            if parts[0] == b"result":
                self.results += 1
                self.seqs.append(json.loads(parts[1])["seq"])
            elif parts[0] == b"reject":
                self.rejects += 1
                self.jpeg_bytes += len(parts[2]) if len(parts) > 2 else 0

    def close(self) -> dict[str, Any]:
        self._stop.set()
        self._t.join(1.0)
        self._sock.close(0)
        self._ctx.term()
        gaps = sum(1 for a, b in zip(self.seqs, self.seqs[1:]) if b != a + 1)
        return {"results": self.results, "rejects": self.rejects, "reject_jpeg_bytes": self.jpeg_bytes, "seq_gaps": gaps}


class _Interrupted(BaseException):
    """A SIGINT/SIGTERM outside ``run_until_signal`` (start-up): unwinds to ``run_station``'s cleanup.
    A BaseException, so no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _StartupSignals:
    """SIGINT/SIGTERM handlers for the parts of :func:`run_station` outside ``run_until_signal``.

    Without them a SIGTERM during start-up (default action: die at once) skips every ``finally``
    and leaves the pty pair's socat running as an orphan. The first such signal raises
    :class:`_Interrupted` (once); signals during the cleanup are logged and ignored so the cleanup
    completes. :meth:`restore` puts the previous handlers back and then re-raises a caught signal,
    so the process still ends as that signal says (SIGTERM: killed by SIGTERM; SIGINT:
    KeyboardInterrupt, exit code 130 from ``edge.cli``). ``run_until_signal`` installs its own
    handlers while the station runs and restores these afterwards. Python only lets the main
    thread set handlers; from another thread this does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.cleaning = False
        self._defer = False
        self._old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.cleaning or self.signum is not None:
            log.warning("signal %s: already stopping", signal.Signals(signum).name)
            return
        self.signum = signum
        if not self._defer:
            raise _Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold a signal until the block ends, then raise it: for a block that creates what the
        cleanup must close (``pty = PtyPair()``: an exception inside ``subprocess.Popen``, after
        socat was forked but before the object exists, would leave socat to nobody)."""
        self._defer = True
        try:
            yield
        finally:
            self._defer = False
        if self.signum is not None:
            raise _Interrupted(self.signum)

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        if self.signum is not None and self._old:
            signal.raise_signal(self.signum)


def _wait_ready(station: Any, timeout: float) -> bool:
    """True once the camera delivers and the PLC port is open (what READY=1 promises)."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        cam = getattr(station.source, "state", "ok") in ("ok", "exhausted")
        plc = station.link is None or station.link.state == "ok"
        if cam and plc:
            return True
        time.sleep(0.05)
    return False


def _trigger_count(source: Any, parts: int | None) -> int:
    """Triggers the demo PLC sends: ``parts``, else one per frame the replay plans (else 100).

    Raises:
        CaptureError: the replay has nothing to play (e.g. a folder with no images): the same
            message ``edgeqc run`` gives, from the source's own start check.
    """
    if parts is not None:
        return parts
    planned = getattr(source, "planned_frames", None)
    n = int(planned()) if planned else 100
    if n == 0:
        source.start()  # raises the CaptureError naming the folder/file; started early is harmless
        log.warning("camera source reports 0 frames to replay; the demo PLC sends 100 triggers")
        n = 100  # e.g. a video whose container does not state its frame count
    return n


def run_station(settings: Settings, json_out: str | None = None, parts: int | None = None,
                rate_hz: float = 10.0, until_signal: bool = True, config: str | None = None) -> int:
    """Run one station; returns the process exit code (0 = every part answered correctly).

    Under systemd (``NOTIFY_SOCKET`` set) it sends READY=1 once the model is loaded, the camera
    delivers and the PLC port is open; WATCHDOG=1 from the inspection loop; STATUS= every status
    period; RELOADING=1/READY=1 around a SIGHUP reload of ``config``; STOPPING=1 on shutdown.

    ``until_signal=True`` is ``edgeqc run`` (logger ``edgeqc.run``), False is ``edgeqc demo``
    (logger ``edgeqc.demo``). On every exit path, a failed start and a SIGINT/SIGTERM during
    start-up included, the station, the PLC simulator, the ZeroMQ counter and the pty pair (its
    socat process) are closed; such a signal is re-raised after the cleanup (SIGTERM then ends the
    process, SIGINT raises KeyboardInterrupt).

    Raises:
        CaptureError, BackendError, ConfigError, OSError, ...: the start failed (``edge.cli``
            turns them into one line and an exit code).
    """
    from edge.app import Station, run_until_signal
    from edge.service import Notifier, status_line
    from edge.summary import format_summary

    rlog = logging.getLogger("edgeqc.run" if until_signal else "edgeqc.demo")
    notifier = Notifier()

    pty: Any = None
    sim: Any = None
    sub: _ZmqCounter | None = None
    station: Any = None
    report: Any = None
    zmq_seen: dict[str, Any] | None = None
    demo_plc = settings.plc.enabled and settings.plc.port == "demo"
    if (demo_plc and until_signal and settings.camera.source == "demo"
            and "loop" not in settings.camera.model_fields_set):
        settings.camera.loop = True  # `edgeqc run` on the demo defaults: keep the line running
        rlog.info('camera.source = plc.port = "demo": the demo parts replay in a loop (camera.loop = true); '
                  "set camera.loop = false for one pass")
    signals = _StartupSignals()
    try:
        if demo_plc:
            from edge.plc.pty import PtyPair

            with signals.deferred():  # at most PtyPair's start_timeout (5 s)
                pty = PtyPair()
        station = Station(settings, plc_port=pty.a if pty is not None else None)
        if settings.zmq.enabled and not until_signal:
            sub = _ZmqCounter(station.publisher.endpoint)
        done = threading.Event()
        if demo_plc:
            from edge.plc.simulator import PlcSimulator

            n = 10**8 if until_signal else _trigger_count(station.source, parts)
            p = settings.plc
            sim = PlcSimulator(pty.b, rate_hz=rate_hz, count=n,
                               answer_timeout_ms=p.deadline_ms + 250, baudrate=p.baudrate, bytesize=p.bytesize,
                               parity=p.parity, stopbits=p.stopbits)
            what = f"PLC simulator on {pty.b} -> edge on {pty.a}: "
            if until_signal:
                rlog.info("%scontinuous triggers at %g/s", what, rate_hz)
            else:
                print(f"{what}{n} triggers at {rate_hz:g}/s", file=sys.stderr)

        station.inspector.on_loop = notifier.watchdog
        station.inspector.status_sinks.append(lambda st: notifier.status(status_line(st)))

        def _stopping() -> None:
            notifier.stopping("draining triggered parts")
            if sim is not None and until_signal:
                # the simulated PLC stops triggering before the edge drains, and keeps its port
                # open until the station has stopped (closed now, the station would log its PLC
                # port as lost on every Ctrl-C): closed in the finally below
                sim.stop_triggers()

        def _reload() -> None:
            notifier.reloading("reloading model and config")
            why = station.reload(config)
            notifier.ready(status_line(station.inspector.status()) + (f"; {why}" if why else ""))

        def _drive() -> None:  # after the station started: no TRG may reach a port nobody has opened
            if _wait_ready(station, settings.camera.open_timeout_ms / 1000 + 5):
                notifier.ready(status_line(station.inspector.status()))
            else:
                rlog.warning("camera or PLC port not ready after start; READY=1 sent anyway, heartbeat says FAULT")
                notifier.ready("started degraded: camera or PLC port not ready")
            if sim is not None:
                sim.start()
                sim.wait_done(sim.count / rate_hz + settings.plc.deadline_ms / 1000 + 30)
            elif not until_signal and station.source.is_replay:
                station.inspector.finished.wait()
            done.set()

        summary = run_until_signal(station, stop_when=None if until_signal else done,
                                   on_reload=_reload if until_signal else None,
                                   on_stopping=_stopping,
                                   on_started=lambda: threading.Thread(target=_drive, name="edgeqc-plc-sim",
                                                                       daemon=True).start())
    except _Interrupted as exc:  # SIGINT/SIGTERM during start-up: clean up below, then end as the signal says
        rlog.info("signal %s during start-up: stopping", signal.Signals(exc.signum).name)
    finally:  # every exit, a failed start or a signal included: nothing may outlive the command (socat!)
        signals.cleaning = True
        try:
            if sim is not None and report is None:
                report = sim.close()
            if sub is not None:
                zmq_seen = sub.close()
            if station is not None:
                station.close()  # idempotent: a no-op after run_until_signal's stop()
        finally:
            try:
                if pty is not None:
                    pty.close()
            finally:
                signals.restore()  # re-raises a start-up signal: SIGTERM ends the process here
    if signals.signum is not None:  # the previous handler returned (not the CLI's case)
        return 128 + signals.signum
    print(format_summary(summary))
    ok = True
    out: dict[str, Any] = {"summary": summary}
    if report is not None:
        r = report.to_dict()
        out["plc_simulator"] = r
        lat = report.latency_summary()
        print(f"PLC simulator: {report.triggers_sent} TRG sent, {report.answered} RES received, "
              f"missing {len(report.missing)}, duplicates {len(report.duplicates)}, late {len(report.late)}, "
              f"bad checksums {report.bad_checksum}, heartbeats {report.heartbeats}"
              + (f"; trigger->RES p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms" if lat["count"] else ""))
        ok = report.ok if not until_signal else True
    if zmq_seen is not None:
        out["zmq"] = zmq_seen
        print(f"ZeroMQ {station.publisher.endpoint}: {zmq_seen['results']} results, "
              f"{zmq_seen['rejects']} rejects with {zmq_seen['reject_jpeg_bytes']} bytes of JPEG received")
    if settings.archive.enabled:
        print(f"reject archive: {settings.archive.path}")
    if json_out:
        Path(json_out).write_text(json.dumps(out, indent=2, default=str))
    return 0 if ok else 1
