"""The serial link to the PLC: port ownership, reader/writer/heartbeat threads, reconnect.

Threads (all daemon, all blocking calls bounded):

* reader: owns opening/closing the port. Reads with ``plc.read_timeout_ms``, cuts lines with
  :class:`~edge.plc.telegram.LineSplitter`, answers PING (PONG) and malformed telegrams (NAK)
  itself and hands every TRG to ``on_trigger(Trigger, t_arrival)`` (``time.monotonic()`` seconds
  when the bytes completing the line were read). A read or write error (``SerialException`` /
  ``OSError``: USB adapter unplugged, pty gone) marks the link lost, closes the port and reopens it
  with the waits of ``plc.reopen_backoff_ms``.
  Two reader threads share the reading role (Leader/Followers, Schmidt et al., *Pattern-Oriented
  Software Architecture* vol. 2): when ``on_trigger`` returns a callable (the inspection loop's
  lone trigger), the reading thread hands the role to the other one and runs that callable
  itself, so the part is inspected without a thread hand-off while the port is still read (the
  next TRG, PING, a malformed line) even if the callable takes long or hangs.
* writer: drains a bounded queue so :meth:`PlcLink.send` never blocks; writes are bounded by
  ``plc.write_timeout_ms``. While the link is lost, queued telegrams are discarded and counted
  (a RES sent late after a reconnect could be taken for the wrong part).
  :meth:`PlcLink.send_now` (the inspection loop's RES) writes from the calling thread instead when
  that cannot block and keeps the order: nothing queued before it, no write in progress, a
  non-blocking write the kernel takes whole.
* heartbeat: ``HBT,<seq>,<OK|FAULT>`` every ``plc.heartbeat_interval_ms`` while the port is open;
  OK/FAULT comes from the ``health()`` callable.

Sources: pyserial 3.5 API (``serial_for_url``, ``in_waiting``, ``cancel_read``, ``exclusive``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import select
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import serial

from edge.plc.telegram import (
    HEARTBEAT_SEQ_MODULO,
    LineSplitter,
    Ping,
    TelegramError,
    Trigger,
    encode_failsafe,
    encode_heartbeat,
    encode_nak,
    encode_pong,
    encode_result,
    parse_plc_line,
)
from edge.settings import PlcSettings

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger("edgeqc.plc.link")

READERS = 2  # reader threads sharing the reading role (see the module docstring)
_FLUSH = object()  # writer sentinel: everything before it has been written (or discarded)
_COUNTERS = (
    "triggers", "pings", "naks_sent", "heartbeats_sent", "telegrams_sent", "bytes_sent",
    "write_errors", "read_errors", "dropped", "dropped_results", "reconnects", "open_failures",
)


def _nonblocking_fd(port: Any) -> int | None:
    """The port's file descriptor if writes on it cannot block (``O_NONBLOCK``), else None."""
    try:
        fd = port.fileno()
        flags = fcntl.fcntl(fd, fcntl.F_GETFL) if isinstance(fd, int) else 0
    except Exception:  # noqa: BLE001 - no descriptor (URL handlers), closed port: use the queue
        return None
    return fd if flags & os.O_NONBLOCK else None


def write_fd(fd: int, data: bytes, timeout_s: float | None) -> int:
    """Write ``data`` to the non-blocking ``fd`` within ``timeout_s`` (None: no limit); returns the
    bytes written (less than ``len(data)`` on timeout). Raises OSError other than EAGAIN (port gone).
    Also the pty master's write (:class:`edge.plc.pty.PtyMaster`)."""
    view = memoryview(data)
    done = 0
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while done < len(data):
        try:
            done += os.write(fd, view[done:])
            continue
        except BlockingIOError:
            pass
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        select.select([], [fd], [], left)
    return done


class PlcLink:
    """EQC-ASCII/1 link to the PLC over pyserial.

    Args:
        settings: ``settings.plc``.
        on_trigger: called in a reader thread as ``on_trigger(Trigger, t_arrival_monotonic_s)``;
            must return quickly (put the trigger on a queue), or return a callable ``() -> object``
            that the link runs in this thread once the other reader thread has taken over the
            port (the work of one part: it may take as long as an inference). Return work for
            one trigger at a time (the Inspector's lock does): with both reader threads in work,
            nobody reads the port. Exceptions of either are logged, not raised.
        on_state: called with ``"ok"`` (port open) / ``"lost"`` (port failed or cannot be opened)
            on every change, from the reader thread.
        health: ``() -> bool``; True = HBT ``OK``, False or an exception = ``FAULT``.
        port: overrides ``settings.port`` (e.g. an endpoint of :class:`~edge.plc.pty.PtyPair`
            when ``settings.port == "demo"``).
        queue_size: telegrams waiting for the writer; beyond it :meth:`send` drops and counts.

    Raises:
        ValueError: ``settings.port`` is ``"demo"`` and no ``port`` is given.

    Use as a context manager, or :meth:`start` / :meth:`close`.
    """

    def __init__(
        self,
        settings: PlcSettings,
        on_trigger: Callable[[Trigger, float], Any],
        on_state: Callable[[str], Any] | None = None,
        health: Callable[[], bool] | None = None,
        *,
        port: str | None = None,
        queue_size: int = 256,
    ) -> None:
        self.settings = settings
        self.port_url = port if port is not None else settings.port
        if self.port_url == "demo":
            raise ValueError(
                "plc.port = 'demo' must be resolved to a pty endpoint first "
                "(edge.plc.pty.PtyPair) and passed as PlcLink(..., port=...)"
            )
        self._on_trigger = on_trigger
        self._on_state = on_state
        self._health = health or (lambda: True)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._splitter = LineSplitter()
        self._port: serial.SerialBase | None = None
        self._port_lock = threading.Lock()  # held by the writer while writing, by the reader to swap/close
        self._write_failed = threading.Event()
        self._stop = threading.Event()  # stops the readers
        self._read_role = threading.Lock()  # held by the one reader thread that reads the port now
        self._stop_hb = threading.Event()
        self._closing = False
        self._state = "init"
        self._opened_once = False
        self._hb_seq = 0
        self._counts: Counter[str] = Counter({k: 0 for k in _COUNTERS})
        self.naks_by_reason: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._pending = 0  # telegrams queued or in the writer's hands (send_now keeps FIFO order)
        self._resync = False  # a write timed out, maybe mid-telegram: start the next with CR LF
        self._threads: list[threading.Thread] = []
        self._last_warn = 0.0
        self._suppressed = 0

    # ---------------------------------------------------------------- public
    @property
    def state(self) -> str:
        """``"init"`` before :meth:`start`, then ``"ok"`` or ``"lost"``, ``"closed"`` after close."""
        return self._state

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: triggers, pings, naks_sent, heartbeats_sent, telegrams_sent, bytes_sent,
        write_errors, read_errors, dropped (all discarded telegrams), dropped_results (RES among
        them), reconnects (successful opens after the first), open_failures; plus state and
        queue_depth and naks_by_reason (NAK token -> count)."""
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            out["naks_by_reason"] = dict(self.naks_by_reason)
        out["state"] = self._state
        out["queue_depth"] = self._queue.qsize()
        return out

    def start(self) -> Self:
        """Open the port (one attempt, synchronously) and start the threads. If the port cannot be
        opened the link starts in state ``lost`` and keeps retrying.

        Raises:
            ValueError: invalid port URL or serial parameters (configuration error, no retry).
        """
        if self._threads:
            return self
        try:
            self._open()
        except (serial.SerialException, OSError) as exc:
            self._count("open_failures")
            log.error("PLC port %s cannot be opened: %s (retrying)", self.port_url, exc)
            self._set_state("lost")
        threads = [(f"reader-{i}", self._reader) for i in range(READERS)]
        for name, target in (*threads, ("writer", self._writer), ("heartbeat", self._heartbeat)):
            t = threading.Thread(target=target, name=f"plc-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def send(self, telegram: bytes) -> bool:
        """Queue an encoded telegram for the writer; never blocks.

        Returns:
            False if it was dropped (queue full or link closed); counted in ``dropped`` and, for a
            RES, in ``dropped_results`` with an ERROR log naming the part.
        """
        if self._closing:
            self._drop(telegram, "link closed")
            return False
        with self._lock:
            self._pending += 1
        try:
            self._queue.put_nowait(telegram)
        except queue.Full:
            with self._lock:
                self._pending -= 1
            self._drop(telegram, f"write queue full ({self._queue.maxsize})")
            return False
        return True

    def send_now(self, telegram: bytes) -> bool:
        """Write ``telegram`` from the calling thread when that cannot block, else :meth:`send` it.

        Saves the writer thread's wake-up on the trigger -> RES path. Written here only when
        nothing is queued or being written before it (order kept), the port is open and no other
        write holds it; the write is one non-blocking ``os.write`` on the port's file descriptor
        (pyserial opens POSIX ports with ``O_NONBLOCK``). If the kernel takes nothing (``EAGAIN``:
        the PLC stopped reading, flow control), the telegram goes to the writer's queue and its
        ``write_timeout_ms``. If it takes part of it (the buffer filled up mid-telegram), the rest
        is written with pyserial's ``write``, bounded by ``write_timeout_ms``, so the bytes stay in
        order; the next telegrams then find the buffer full and go to the queue. Ports without a
        non-blocking descriptor (pyserial URL handlers) always use the queue.

        Returns:
            False if it was dropped (see :meth:`send`), or the write failed (counted in
            ``write_errors`` and ``dropped``, logged); never raises.
        """
        if self._closing or self._pending or not self._port_lock.acquire(blocking=False):
            return self.send(telegram)
        try:
            port = self._port
            if port is None or self._write_failed.is_set() or self._pending:
                fd = None
            else:
                fd = _nonblocking_fd(port)
            if fd is not None and not self._resync:
                try:
                    n = os.write(fd, telegram)
                except BlockingIOError:
                    n = 0
                except Exception as exc:  # noqa: BLE001 - port gone (EIO, EBADF): a failed write
                    self._count("write_errors")
                    self._write_failed.set()
                    self._drop(telegram, f"write failed: {exc}")
                    return False
                if n == len(telegram):
                    with self._lock:
                        self._counts["telegrams_sent"] += 1
                        self._counts["bytes_sent"] += n
                    return True
                if n > 0:  # the rest now, in order (bounded by write_timeout_ms)
                    return self._write_locked(port, telegram, offset=n)  # type: ignore[arg-type]
        finally:
            self._port_lock.release()
        return self.send(telegram)

    def send_result(self, part_id: str | int, passed: bool, label: str, probability: float) -> bool:
        """Encode a RES with the configured pass/fail codes and :meth:`send` it."""
        s = self.settings
        return self.send(encode_result(part_id, passed, label, probability, s.pass_code, s.fail_code))

    def send_failsafe(self, part_id: str | int, cause: str) -> bool:
        """Encode a fail-safe RES (``TIMEOUT``/``NO_FRAME``/``ERROR``) and :meth:`send` it."""
        return self.send(encode_failsafe(part_id, cause, self.settings.fail_code))

    def close(self, flush_timeout: float = 1.0) -> None:
        """Stop the threads and close the port. Telegrams already queued are written first for at
        most ``flush_timeout`` s (plus one write timeout); returns within about
        ``flush_timeout + read_timeout + 2 * write_timeout``."""
        if self._state == "closed":
            return
        deadline = time.monotonic() + flush_timeout
        self._stop_hb.set()
        threads = {t.name: t for t in self._threads}
        if "plc-heartbeat" in threads:
            threads["plc-heartbeat"].join(flush_timeout)
        self._closing = True
        writer = threads.get("plc-writer")
        if writer is not None:
            try:
                self._queue.put(_FLUSH, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                pass
            writer.join(max(0.0, deadline - time.monotonic()) + self.settings.write_timeout_ms / 1000)
        self._stop.set()
        port = self._port
        if port is not None and hasattr(port, "cancel_read"):
            try:
                port.cancel_read()
            except (serial.SerialException, OSError, ValueError) as exc:  # best effort; read timeout bounds it
                log.debug("cancel_read: %s", exc)
        for t in self._threads:
            t.join(self.settings.read_timeout_ms / 1000 + self.settings.write_timeout_ms / 1000 + 0.5)
            if t.is_alive():
                log.error("PLC thread %s did not stop in time", t.name)
        self._close_port()
        pending = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _FLUSH:
                pending += 1
                self._drop(item, "link closed before it was written")
        if pending:
            log.warning("PLC link closed with %d telegram(s) unwritten", pending)
        self._state = "closed"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- internals
    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def _set_state(self, state: str) -> None:
        if state == self._state:
            return
        self._state = state
        if state == "ok":
            log.info("PLC link %s open", self.port_url)
        if self._on_state is not None:
            try:
                self._on_state(state)
            except Exception:
                log.exception("on_state callback failed")

    def _drop(self, telegram: bytes, why: str) -> None:
        self._count("dropped")
        if telegram.startswith(b"RES,"):
            self._count("dropped_results")
            part = telegram.split(b",", 2)[1].decode("ascii", "replace")
            log.error("RESULT NOT SENT to PLC for part %s (%s): %r", part, why, telegram)
        else:
            self._warn_limited("PLC telegram dropped (%s): %r", why, telegram)

    def _warn_limited(self, msg: str, *args: object) -> None:
        """At most one warning per second; the others are summed up in the next one."""
        now = time.monotonic()
        if now - self._last_warn >= 1.0:
            if self._suppressed:
                log.warning("(%d similar PLC warnings suppressed)", self._suppressed)
                self._suppressed = 0
            self._last_warn = now
            log.warning(msg, *args)
        else:
            self._suppressed += 1

    def _open(self) -> None:
        s = self.settings
        kwargs: dict[str, Any] = {
            "baudrate": s.baudrate,
            "bytesize": s.bytesize,
            "parity": s.parity,
            "stopbits": s.stopbits,
            "timeout": s.read_timeout_ms / 1000,
            "write_timeout": s.write_timeout_ms / 1000,
        }
        if "://" not in self.port_url:
            kwargs["exclusive"] = True  # flock on POSIX; a second edgeqc cannot steal the port
        port = serial.serial_for_url(self.port_url, **kwargs)
        try:
            port.reset_input_buffer()  # stale bytes from before the (re)open
        except (serial.SerialException, OSError, NotImplementedError):
            pass
        self._splitter.reset()
        self._write_failed.clear()
        with self._port_lock:
            self._port = port
        if self._opened_once:
            self._count("reconnects")
        self._opened_once = True
        self._set_state("ok")

    def _close_port(self) -> None:
        with self._port_lock:
            port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError) as exc:
                log.debug("closing PLC port: %s", exc)

    def _lost(self, why: object) -> None:
        log.error("PLC port %s lost: %s", self.port_url, why)
        self._close_port()
        self._set_state("lost")

    def _reader(self) -> None:
        """One of the READERS threads: take the reading role, read until a TRG comes with work for
        this thread (or the link stops), hand the role on, do the work, queue for the role again."""
        while not self._stop.is_set():
            if not self._read_role.acquire(timeout=0.1):  # the other thread reads; check _stop
                continue
            try:
                work = self._read_until_work()
            finally:
                self._read_role.release()  # the other reader thread reads from here on
            for fn in work:
                try:
                    fn()
                except Exception:
                    log.exception("trigger work failed")

    def _read_until_work(self) -> list[Callable[[], object]]:
        """The reader loop while this thread holds the reading role; returns the callables that
        ``on_trigger`` returned for the last chunk read (empty when the link stops)."""
        backoff = self.settings.reopen_backoff_ms
        attempt = 0
        while not self._stop.is_set():
            port = self._port
            if port is None:
                wait = backoff[min(attempt, len(backoff) - 1)] / 1000
                if self._stop.wait(wait):
                    break
                try:
                    self._open()
                    attempt = 0
                except (serial.SerialException, OSError, ValueError) as exc:
                    attempt += 1
                    self._count("open_failures")
                    log.debug("reopen of %s failed (attempt %d): %s", self.port_url, attempt, exc)
                    self._set_state("lost")
                continue
            try:
                data = port.read(1)
                if data:
                    waiting = port.in_waiting
                    if waiting:
                        data += port.read(waiting)
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                # TypeError/AttributeError: pyserial internals after the fd went away under close()
                if self._stop.is_set():
                    break
                self._count("read_errors")
                self._lost(f"read failed: {exc}")
                continue
            t = time.monotonic()
            if self._write_failed.is_set():
                self._lost("write failed")
                continue
            if data:
                work = self._handle(data, t)
                if work:
                    return work
        return []

    def _handle(self, data: bytes, t_arrival: float) -> list[Callable[[], object]]:
        """Answer PING/malformed lines, pass TRGs on; returns what ``on_trigger`` asked to run."""
        work: list[Callable[[], object]] = []
        for item in self._splitter.feed(data):
            if isinstance(item, TelegramError):
                self._nak(item, item.line)
                continue
            try:
                tel = parse_plc_line(item, self.settings.checksum_required)
            except TelegramError as err:
                self._nak(err, item)
                continue
            if isinstance(tel, Ping):
                self._count("pings")
                self._reply(encode_pong())
            elif isinstance(tel, Trigger):
                self._count("triggers")
                try:
                    fn = self._on_trigger(tel, t_arrival)
                except Exception:
                    log.exception("on_trigger failed for part %s", tel.part_id)
                    continue
                if callable(fn):
                    work.append(fn)
        return work

    def _nak(self, err: TelegramError, line: bytes) -> None:
        self._count("naks_sent")
        with self._lock:
            self.naks_by_reason[err.reason] += 1
        self._warn_limited("NAK %s for PLC telegram %r: %s", err.reason, line[:80], err.detail)
        self._reply(encode_nak(err.reason))

    def _reply(self, telegram: bytes) -> None:
        """Queue a PONG or NAK unless the write queue is half full: the other half is kept for
        RES telegrams. A PLC that floods PINGs or garbage (a PONG is longer than a PING) must not
        fill the queue and get a part's RES dropped (fresh-user test: 500 PINGs back to back, the
        queue full of PONGs). A reply shed here is counted in ``dropped`` and logged."""
        waiting = self._queue.qsize()
        if waiting >= self._queue.maxsize // 2:
            self._drop(telegram, f"write queue half full ({waiting}/{self._queue.maxsize}), the rest kept for RES")
            return
        self.send(telegram)

    def _writer(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is _FLUSH:
                return
            if self._stop.is_set():  # close() gave up flushing: the rest is discarded (and counted) there
                self._drop(item, "link closed before it was written")
                return
            try:
                with self._port_lock:
                    port = self._port
                    if port is None or self._write_failed.is_set():
                        self._drop(item, "PLC port lost")
                    else:
                        self._write_locked(port, item)
            finally:
                with self._lock:
                    self._pending -= 1

    def _write_locked(self, port: serial.SerialBase, item: bytes, offset: int = 0) -> bool:
        """Write ``item[offset:]`` (caller holds ``_port_lock``; ``offset`` bytes of it were written
        already) within ``plc.write_timeout_ms``; errors are counted and logged, not raised.

        On a POSIX port the bytes are written here with non-blocking ``os.write`` and ``select``,
        so a timeout knows how much went out: pyserial's ``write`` raises its timeout *after* a
        complete write too when the port is not writable again in time, which would count a
        delivered telegram as lost. Nothing written: the telegram is lost, the line is clean. Part
        of it written: the next telegram is sent as CR LF + telegram, so the PLC sees the fragment
        as one line that fails its checksum (discarded) and an intact telegram after it
        (docs/plc-protocol.md, "Framing"). Ports without a descriptor use pyserial's ``write``."""
        data = item[offset:] if offset else item
        if self._resync and not offset:
            data = b"\r\n" + data
        fd = _nonblocking_fd(port)
        try:
            if fd is None:
                try:
                    port.write(data)
                    written = len(data)
                except serial.SerialTimeoutException:
                    written = -1  # pyserial does not say how much went out
            else:
                written = write_fd(fd, data, self.settings.write_timeout_ms / 1000.0)
        except (serial.SerialException, OSError) as exc:
            self._count("write_errors")
            self._write_failed.set()
            self._drop(item, f"write failed: {exc}")
            return False
        if written != len(data):
            # a stuck port (flow control, no reader): this telegram is lost, the port stays
            if written != 0 or offset:
                self._resync = True  # a fragment may be on the line
            sent = "some" if written < 0 else str(offset + written)
            self._count("write_errors")
            self._drop(item, f"write timeout after {self.settings.write_timeout_ms:g} ms "
                             f"({sent} of {len(item)} bytes written)")
            return False
        self._resync = False
        with self._lock:
            self._counts["telegrams_sent"] += 1
            self._counts["bytes_sent"] += len(item)
        return True

    def _heartbeat(self) -> None:
        interval = self.settings.heartbeat_interval_ms / 1000
        next_t = time.monotonic()
        health_failed = False
        while not self._stop_hb.wait(max(0.0, next_t - time.monotonic())):
            now = time.monotonic()
            next_t += interval
            if next_t < now:  # fell behind (suspend, overload): no burst of heartbeats
                next_t = now + interval
            if self._state != "ok":
                continue
            try:
                ok = bool(self._health())
                health_failed = False
            except Exception:
                if not health_failed:  # once per failure streak, not every beat
                    log.exception("health() failed; heartbeats say FAULT until it works again")
                health_failed = True
                ok = False
            if self.send(encode_heartbeat(self._hb_seq, ok)):
                self._count("heartbeats_sent")
            self._hb_seq = (self._hb_seq + 1) % HEARTBEAT_SEQ_MODULO
