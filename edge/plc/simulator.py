"""The PLC side of EQC-ASCII/1: sends triggers, checks every answer (demo, tests, commissioning).

:class:`PlcSimulator` opens a serial port or pyserial URL (or uses an already open port object,
e.g. the master of :class:`edge.plc.pty.DirectPty`), sends ``TRG,<part_id>`` at a fixed
rate (optionally ``PING`` and deliberately malformed lines), reads everything the edge sends,
verifies each checksum and matches exactly one RES per TRG. The :class:`SimReport` counts
answered, missing, duplicate, unexpected and late parts, trigger->RES latency in ms, NAKs by
reason and heartbeats.

Latency is measured from just before the TRG is written to the port until the RES line has been
read, on this machine's monotonic clock; over a real cable it includes both transmission times
(about 87 us per byte at 115200 8N1).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import serial

from edge.plc.telegram import (
    HEARTBEAT_SEQ_MODULO,
    Heartbeat,
    LineSplitter,
    Nak,
    Pong,
    Result,
    TelegramError,
    checksum,
    encode_ping,
    encode_trigger,
    parse_edge_line,
)

if TYPE_CHECKING:
    from typing_extensions import Self


_RECENT_IDS = 100_000  # part ids remembered to tell a duplicate RES from an unexpected one
_MAX_LATENCIES = 1_000_000  # latency samples kept (the summary covers the first million answers)


class PlcPort(Protocol):
    """What the simulator calls on its port: a pyserial port, or :class:`edge.plc.pty.PtyMaster`.

    ``read`` must return within a short timeout (about 0.1 s) with what it has (``b''`` if
    nothing): the reader thread checks for stop between reads. Errors: ``OSError`` (pyserial's
    ``SerialException`` is one).
    """

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    @property
    def in_waiting(self) -> int: ...

    def close(self) -> None: ...


def _checked(body: bytes) -> bytes:
    return body + b"*" + checksum(body).encode("ascii") + b"\r\n"


GARBAGE: dict[str, bytes] = {
    "BAD_CHECKSUM": b"TRG,G0001*00\r\n",
    "UNKNOWN_CMD": _checked(b"FOO,G0002"),
    "BAD_PART_ID": _checked(b"TRG,G0003/with/slashes"),
    "TOO_LONG": b"TRG," + b"X" * 96 + b"\r\n",  # a 100-byte line
    "NON_ASCII": b"TRG,G\xe90004\r\n",
    "BAD_FORMAT": _checked(b"TRG,G0005,extra"),
}
"""One malformed line per NAK reason, valid checksum where the checksum is not the point, so each
gets its own NAK with or without ``plc.checksum_required`` (MISSING_CHECKSUM: send ``TRG,X`` to an
edge that requires checksums)."""


@dataclass
class SimReport:
    """What the simulator saw. Part ids are listed in the order they were found."""

    port: str
    triggers_sent: int = 0
    answered: int = 0
    missing: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)
    bad_checksum: int = 0
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    pings_sent: int = 0
    pongs: int = 0
    garbage_sent: int = 0
    naks: dict[str, int] = field(default_factory=dict)
    heartbeats_ok: int = 0
    heartbeats_fault: int = 0
    heartbeat_gaps: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    failsafe: dict[str, int] = field(default_factory=dict)
    free_run_results: int = 0
    duration_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    sent_at: list[tuple[str, float]] = field(default_factory=list, repr=False)
    """``(part id, time.monotonic() s just before its TRG was written)`` of each answer in
    ``latencies_ms`` (same order): lets a caller on the same machine pair a part with the edge's
    own "RES written" instant (``edgeqc bench``); CLOCK_MONOTONIC is system-wide."""

    @property
    def heartbeats(self) -> int:
        return self.heartbeats_ok + self.heartbeats_fault

    @property
    def ok(self) -> bool:
        """Every TRG answered exactly once and in time, no bad checksum or malformed answer,
        one PONG per PING, one NAK per garbage line, no port error."""
        return not (
            self.missing or self.duplicates or self.unexpected or self.late or self.bad_checksum
            or self.malformed or self.errors or self.pongs != self.pings_sent
            or sum(self.naks.values()) != self.garbage_sent
        )

    def latency_summary(self) -> dict[str, float | int | None]:
        """count, min, mean, p50, p95, p99, max of trigger->RES latency in ms (nearest rank)."""
        xs = sorted(self.latencies_ms)
        if not xs:
            return {"count": 0, "min": None, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}

        def pct(q: float) -> float:
            return round(xs[min(len(xs) - 1, max(0, int(-(-q * len(xs) // 100)) - 1))], 3)

        return {"count": len(xs), "min": round(xs[0], 3), "mean": round(sum(xs) / len(xs), 3),
                "p50": pct(50), "p95": pct(95), "p99": pct(99), "max": round(xs[-1], 3)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report (latencies summarised, not listed)."""
        d = {k: v for k, v in self.__dict__.items() if k not in ("latencies_ms", "sent_at")}
        d["heartbeats"] = self.heartbeats
        d["latency_ms"] = self.latency_summary()
        d["ok"] = self.ok
        return d


class PlcSimulator:
    """Plays the PLC on ``port`` (a device path or pyserial URL, or an open port object).

    Args:
        port: serial port / pyserial URL of the PLC end (opened by :meth:`start`, closed by
            :meth:`close`), or an already open :class:`PlcPort` (e.g.
            :attr:`edge.plc.pty.DirectPty.master`), which is neither opened nor closed here, so
            one port serves several simulator runs; its own read timeout applies and the serial
            settings below are not applied to it.
        rate_hz: triggers per second (> 0).
        count: triggers to send; default ``len(part_ids)`` or 100. 0 = listen only (free-run mode:
            RES telegrams are counted, not matched) for ``duration_s``.
        part_ids: part ids to send in order (each 1-16 of ``[A-Za-z0-9_-]``); default
            ``P000001``, ``P000002``, ...; reused cyclically if shorter than ``count``.
        ping_every: send a PING after every Nth trigger (0 = never).
        garbage: malformed lines (raw bytes incl. line end) sent one before each of the first
            triggers; each should be answered by one NAK (see :data:`GARBAGE`).
        checksum: send TRG/PING with ``*HH``.
        answer_timeout_ms: a RES later than this after its TRG is counted ``late``; parts with no
            RES this long after their TRG are ``missing`` once the run ends.
        duration_s: listen-only run time in s (count = 0).
        on_event: called with one human-readable line per exchange (from the simulator's threads).
        baudrate, bytesize, parity, stopbits: serial settings (must match the edge; port paths/URLs only).

    Raises:
        ValueError: bad rate, count or part id.
    """

    def __init__(
        self,
        port: str | PlcPort,
        rate_hz: float = 5.0,
        count: int | None = None,
        *,
        part_ids: Sequence[str] | None = None,
        ping_every: int = 0,
        garbage: Sequence[bytes] = (),
        checksum: bool = True,
        answer_timeout_ms: float = 1000.0,
        duration_s: float | None = None,
        on_event: Callable[[str], Any] | None = None,
        baudrate: int = 115200,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
    ) -> None:
        if not rate_hz > 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        self.port_url = port if isinstance(port, str) else None
        self._given_port = None if isinstance(port, str) else port
        self.rate_hz = float(rate_hz)
        self.part_ids = list(part_ids) if part_ids else None
        self.count = count if count is not None else (len(self.part_ids) if self.part_ids else 100)
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")
        if self.count == 0 and duration_s is None:
            raise ValueError("count = 0 (listen only) needs duration_s")
        self._checksum = checksum
        for pid in self.part_ids or ():
            encode_trigger(pid)  # ValueError naming a bad part id now, not in the sender thread
        self.ping_every = ping_every
        self.garbage = list(garbage)
        self._ping = encode_ping(checksum)
        self.answer_timeout = answer_timeout_ms / 1000
        self.duration_s = duration_s
        self._on_event = on_event
        self._serial_kwargs = {"baudrate": baudrate, "bytesize": bytesize, "parity": parity, "stopbits": stopbits}
        self.report = SimReport(port=port if isinstance(port, str) else str(getattr(port, "name", None) or port))
        self._outstanding: dict[str, deque[float]] = {}
        self._sent_ids: dict[str, None] = {}  # recent part ids (ordered set, bounded) to tell duplicates
        self._pings: deque[float] = deque()
        self._last_hbt: int | None = None
        self._naks: Counter[str] = Counter()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._triggers_off = threading.Event()  # stop_triggers(): no more TRG, keep reading RES
        self._sender_done = False
        self._port: PlcPort | None = None
        self._threads: list[threading.Thread] = []
        self._t0 = 0.0

    def _part_id(self, i: int) -> str:
        if self.part_ids:
            return self.part_ids[i % len(self.part_ids)]
        return f"P{i + 1:06d}"

    def _event(self, text: str) -> None:
        if self._on_event is not None:
            self._on_event(text)

    def start(self) -> Self:
        """Open the port (unless given open) and start sending/reading.

        Raises:
            serial.SerialException: the port cannot be opened. ValueError: bad URL/settings.
        """
        if self._given_port is not None:
            self._port = self._given_port
        else:
            self._port = serial.serial_for_url(self.port_url, timeout=0.1, write_timeout=1.0, **self._serial_kwargs)
        self._t0 = time.monotonic()
        for name, target in (("reader", self._reader), ("sender", self._sender)):
            t = threading.Thread(target=target, name=f"plcsim-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _done(self, now: float) -> tuple[bool, float]:
        """(finished?, seconds until the answer could change that). Call with the lock held."""
        if self.count == 0:
            left = self._t0 + (self.duration_s or 0.0) - now
            return left <= 0, max(left, 0.0)
        if not self._sender_done:
            return False, float("inf")  # the sender notifies when it is done
        newest = [q[-1] for q in self._outstanding.values() if q]
        if self._pings:
            newest.append(self._pings[-1])
        if not newest:
            return True, 0.0
        left = max(newest) + self.answer_timeout - now
        return left <= 0, max(left, 0.0)

    def wait_done(self, timeout: float) -> bool:
        """Wait until every trigger was sent and each was answered or has timed out (listen mode:
        until ``duration_s`` passed). Returns False if ``timeout`` s passed first."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                done, left = self._done(now)
                if done:
                    return True
                if now >= end:
                    return False
                self._cond.wait(min(max(left, 0.005), end - now))

    def stop_triggers(self) -> None:
        """Send no more ``TRG`` (nor garbage, nor PING); keep reading, so the answers to parts
        already triggered are still counted. A line being stopped: the PLC stops triggering, the
        edge drains, and only then is the port closed (:meth:`close`)."""
        self._triggers_off.set()

    def close(self) -> SimReport:
        """Stop, close the port (unless it was given open) and finalise the report (still
        outstanding parts -> ``missing``)."""
        self._triggers_off.set()
        self._stop.set()
        for t in self._threads:
            t.join(2.0)
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck and self._given_port is not None:  # would keep reading the port under the next user
            with self._cond:
                self.report.errors.append(f"threads still running after close: {', '.join(stuck)}")
        if self._port is not None and self._given_port is None:
            try:
                self._port.close()
            except (serial.SerialException, OSError):
                pass
        r = self.report
        with self._cond:
            for pid, q in self._outstanding.items():
                r.missing.extend([pid] * len(q))
                q.clear()
            r.naks = dict(self._naks)
            r.duration_s = round(time.monotonic() - self._t0, 3) if self._t0 else 0.0
        return r

    def run(self, timeout: float | None = None) -> SimReport:
        """start(), wait_done(), close(). ``timeout`` defaults to the send time plus the answer timeout + 5 s."""
        if timeout is None:
            timeout = (self.count / self.rate_hz if self.count else self.duration_s or 0) + self.answer_timeout + 5
        self.start()
        try:
            if not self.wait_done(timeout):
                self.report.errors.append(f"run did not finish within {timeout:.1f} s")
        finally:
            self.close()
        return self.report

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ threads
    def _write(self, data: bytes) -> bool:
        assert self._port is not None
        try:
            self._port.write(data)
            return True
        except (serial.SerialException, OSError) as exc:
            with self._cond:
                self.report.errors.append(f"write failed: {exc}")
            self._event(f"ERROR write failed: {exc}")
            self._stop.set()
            return False

    def _sender(self) -> None:
        period = 1.0 / self.rate_hz
        try:
            for i in range(self.count):  # encoded one by one: count may be huge (continuous demo)
                if self._triggers_off.wait(max(0.0, self._t0 + i * period - time.monotonic())):
                    break
                if i < len(self.garbage):
                    self._event(f"GARBAGE {self.garbage[i]!r}")
                    if not self._write(self.garbage[i]):
                        break
                    with self._cond:
                        self.report.garbage_sent += 1
                pid = self._part_id(i)
                frame = encode_trigger(pid, self._checksum)
                with self._cond:
                    self._outstanding.setdefault(pid, deque()).append(time.monotonic())
                    self._sent_ids.pop(pid, None)
                    self._sent_ids[pid] = None
                    if len(self._sent_ids) > _RECENT_IDS:
                        del self._sent_ids[next(iter(self._sent_ids))]
                    self.report.triggers_sent += 1
                self._event(f"TRG {pid}")
                if not self._write(frame):
                    break
                if self.ping_every and (i + 1) % self.ping_every == 0:
                    with self._cond:
                        self._pings.append(time.monotonic())
                        self.report.pings_sent += 1
                    self._event("PING")
                    if not self._write(self._ping):
                        break
        finally:
            with self._cond:
                self._sender_done = True
                self._cond.notify_all()

    def _reader(self) -> None:
        assert self._port is not None
        splitter = LineSplitter()
        while not self._stop.is_set():
            try:
                data = self._port.read(1)
                if data and self._port.in_waiting:
                    data += self._port.read(self._port.in_waiting)
            except (serial.SerialException, OSError) as exc:
                if not self._stop.is_set():
                    with self._cond:
                        self.report.errors.append(f"read failed: {exc}")
                        self._cond.notify_all()
                    self._event(f"ERROR read failed: {exc}")
                    self._stop.set()
                return
            if not data:
                continue
            now = time.monotonic()
            for item in splitter.feed(data):
                with self._cond:
                    self._handle(item, now)
                    self._cond.notify_all()

    def _bad(self, text: str, checksum: bool) -> None:
        r = self.report
        if checksum:
            r.bad_checksum += 1
        else:
            r.malformed += 1
        if len(r.malformed_examples) < 10:
            r.malformed_examples.append(text)
        self._event(f"BAD {text}")

    def _handle(self, item: bytes | TelegramError, now: float) -> None:
        """Account one line from the edge. Called with the lock held."""
        r = self.report
        if isinstance(item, TelegramError):
            self._bad(str(item), checksum=False)
            return
        try:
            tel = parse_edge_line(item)
        except TelegramError as err:
            self._bad(f"{err} in {item!r}", checksum=err.reason in ("BAD_CHECKSUM", "MISSING_CHECKSUM"))
            return
        if isinstance(tel, Result):
            self._result(tel, now)
        elif isinstance(tel, Heartbeat):
            if tel.ok:
                r.heartbeats_ok += 1
            else:
                r.heartbeats_fault += 1
            if self._last_hbt is not None and tel.seq != (self._last_hbt + 1) % HEARTBEAT_SEQ_MODULO:
                r.heartbeat_gaps += 1
            self._last_hbt = tel.seq
            self._event(f"HBT {tel.seq} {'OK' if tel.ok else 'FAULT'}")
        elif isinstance(tel, Pong):
            if self._pings:
                self._pings.popleft()
                r.pongs += 1
                self._event("PONG")
            else:
                self._bad("PONG without PING", checksum=False)
        elif isinstance(tel, Nak):
            self._naks[tel.reason] += 1
            self._event(f"NAK {tel.reason}")

    def _result(self, tel: Result, now: float) -> None:
        r = self.report
        text = f"RES {tel.part_id} {tel.code} {tel.label} {tel.probability:.3f}"
        if self.count == 0:
            r.free_run_results += 1
            r.verdicts[tel.code] = r.verdicts.get(tel.code, 0) + 1
            self._event(text)
            return
        q = self._outstanding.get(tel.part_id)
        if not q:
            if tel.part_id in self._sent_ids:
                r.duplicates.append(tel.part_id)
                self._event(f"{text} DUPLICATE")
            else:
                r.unexpected.append(tel.part_id)
                self._event(f"{text} UNEXPECTED")
            return
        t_sent = q.popleft()
        latency = (now - t_sent) * 1000
        if not q:
            del self._outstanding[tel.part_id]
        r.verdicts[tel.code] = r.verdicts.get(tel.code, 0) + 1
        if tel.failsafe:
            r.failsafe[tel.failsafe] = r.failsafe.get(tel.failsafe, 0) + 1
        if latency > self.answer_timeout * 1000:
            r.late.append(tel.part_id)
            self._event(f"{text} {latency:.1f} ms LATE")
            return
        r.answered += 1
        if len(r.latencies_ms) < _MAX_LATENCIES:
            r.latencies_ms.append(latency)
            r.sent_at.append((tel.part_id, t_sent))
        self._event(f"{text} {latency:.1f} ms")
