"""Follow one or several stations' ZeroMQ PUB sockets (topics ``result``, ``reject``, ``status``).

One background thread, one SUB socket per station endpoint (so link state and counters belong to
one station), polled together. Reconnection is ZeroMQ's own: a SUB socket that ``connect``\\s keeps
retrying (``ZMQ_RECONNECT_IVL`` .. ``ZMQ_RECONNECT_IVL_MAX``) and re-sends its subscriptions when
a restarted station binds again (zmq_setsockopt(3), zmq_connect(3)); ZMTP heartbeats
(``ZMQ_HEARTBEAT_IVL``/``_TIMEOUT``) notice a station that vanished without closing TCP (power
cut, cable). A socket monitor reports link up/down for the health view.

Why ``result`` too: it carries every part's ``seq`` (gaps are only meaningful on the full
sequence) and every fail, so a reject whose frame message was lost (publisher queue full) still
reaches the history — filed without a frame after ``frame_wait_s`` and counted in
``missing_frames``. The publisher sends ``result`` before ``reject`` (edge/publish.py).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from edge.review.messages import MessageError, PartMessage, check_image, parse_part, parse_status
from edge.review.stations import StationState

log = logging.getLogger("edgeqc.review.live")

OnReject = Callable[[PartMessage, "bytes | None", "str | None", StationState], None]
OnHealth = Callable[[StationState], None]

TOPICS = (b"result", b"reject", b"status")


class StationFeed:
    """Subscribes to ``endpoints`` and calls back on the feed thread.

    Args:
        endpoints: ZeroMQ endpoints the stations bind (``review.stations``), e.g. ``tcp://10.0.0.5:5556``.
        on_reject: ``(message, image bytes | None, "jpg"|"png"|None, state)`` for each reject; the
            image is None when none came or it was corrupt (then ``corrupt_images`` is counted).
        on_health: ``(state)`` after each status message and each link change.
        frame_wait_s: how long a ``fail`` result waits for its ``reject`` frame message, in s.
        reconnect_ivl_ms, reconnect_ivl_max_ms: ZeroMQ reconnect back-off bounds, in ms.
        heartbeat_ivl_ms: ZMTP heartbeat period in ms; a peer silent for 3 periods is dropped.

    Callbacks must not block for long (they run on the feed thread); exceptions are logged.
    """

    def __init__(
        self,
        endpoints: list[str],
        on_reject: OnReject,
        on_health: OnHealth | None = None,
        frame_wait_s: float = 2.0,
        reconnect_ivl_ms: int = 250,
        reconnect_ivl_max_ms: int = 2000,
        heartbeat_ivl_ms: int = 1000,
        rcvhwm: int = 10000,
    ) -> None:
        if not endpoints:
            raise ValueError("review.stations = []: expected at least one ZeroMQ endpoint")
        self.states = {ep: StationState(ep) for ep in endpoints}
        self._on_reject = on_reject
        self._on_health = on_health
        self._frame_wait = frame_wait_s
        self._opts = {
            zmq.RCVHWM: rcvhwm,
            zmq.LINGER: 0,
            zmq.RECONNECT_IVL: reconnect_ivl_ms,
            zmq.RECONNECT_IVL_MAX: reconnect_ivl_max_ms,
            zmq.HEARTBEAT_IVL: heartbeat_ivl_ms,
            zmq.HEARTBEAT_TIMEOUT: 3 * heartbeat_ivl_ms,
        }
        self._ctx = zmq.Context()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="review-zmq", daemon=True)
        # (station_id, seq, trigger_ts) of fails seen on `result` still waiting for their frame.
        self._pending: collections.OrderedDict[tuple[str, int, float], tuple[PartMessage, float, str]] = (
            collections.OrderedDict()
        )
        self._framed: collections.deque[tuple[str, int, float]] = collections.deque(maxlen=1024)
        self._sockets: list[zmq.Socket[Any]] = []

    # ------------------------------------------------------------------ life cycle
    def start(self) -> StationFeed:
        """Open the sockets and start the thread. Raises ``ValueError`` on a malformed endpoint."""
        self._thread.start()
        self._ready.wait(5.0)
        if self._error is not None:
            self._thread.join(2.0)
            self._ctx.term()
            raise ValueError(str(self._error))
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._ctx.term()

    def health(self) -> list[dict[str, Any]]:
        """Every followed endpoint's :meth:`StationState.to_dict`."""
        return [s.to_dict() for s in self.states.values()]

    # ------------------------------------------------------------------ thread
    def _open(self) -> tuple[zmq.Poller, dict[zmq.Socket[Any], StationState], dict[zmq.Socket[Any], StationState]]:
        poller = zmq.Poller()
        subs: dict[zmq.Socket[Any], StationState] = {}
        mons: dict[zmq.Socket[Any], StationState] = {}
        for ep, st in self.states.items():
            s = self._ctx.socket(zmq.SUB)
            self._sockets.append(s)
            for opt, val in self._opts.items():
                s.setsockopt(opt, val)
            for t in TOPICS:
                s.setsockopt(zmq.SUBSCRIBE, t)
            mon = s.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
            self._sockets.append(mon)
            try:
                s.connect(ep)
            except zmq.ZMQError as exc:
                raise ValueError(f"review.stations: endpoint {ep!r} cannot be connected ({exc})") from None
            poller.register(s, zmq.POLLIN)
            poller.register(mon, zmq.POLLIN)
            subs[s] = st
            mons[mon] = st
        return poller, subs, mons

    def _run(self) -> None:
        try:
            try:
                poller, subs, mons = self._open()
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                self._error = exc
                return
            finally:
                self._ready.set()
            while not self._stop.is_set():
                try:
                    self._poll_once(poller, subs, mons)
                except zmq.ContextTerminated:
                    return
                except Exception:  # the feed thread must not die
                    log.exception("review feed: unexpected error; continuing")
                    self._stop.wait(0.5)
        finally:
            for s in self._sockets:
                s.close(0)

    def _poll_once(
        self,
        poller: zmq.Poller,
        subs: dict[zmq.Socket[Any], StationState],
        mons: dict[zmq.Socket[Any], StationState],
    ) -> None:
        for sock, _ in poller.poll(100):
            if sock in mons:
                self._monitor_event(sock, mons[sock])
            else:
                st = subs[sock]
                for _ in range(1000):  # drain, but let the other stations have a turn
                    try:
                        parts = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._handle(parts, st)
        self._expire_pending()

    def _monitor_event(self, mon: zmq.Socket[Any], st: StationState) -> None:
        try:
            ev = recv_monitor_message(mon, zmq.NOBLOCK)
        except zmq.Again:
            return
        if ev["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            st.link_up()
            log.info("station %s connected", st.endpoint)
        elif ev["event"] == zmq.EVENT_DISCONNECTED:
            st.link_down()
            log.warning("station %s disconnected; ZeroMQ reconnects by itself", st.endpoint)
        self._health(st)

    def _handle(self, parts: list[bytes], st: StationState) -> None:
        topic = parts[0]
        try:
            if topic == b"status":
                if len(parts) != 2:
                    raise MessageError(f"status: {len(parts)} frames, expected 2")
                st.observe_status(parse_status(parts[1]))
                self._health(st)
            elif topic == b"result":
                if len(parts) != 2:
                    raise MessageError(f"result: {len(parts)} frames, expected 2")
                msg = parse_part(parts[1])
                st.observe_seq(msg.station_id, msg.seq)
                st.counters["results"] += 1
                key = (msg.station_id, msg.seq, msg.trigger_ts)
                if msg.is_reject and key not in self._framed:
                    self._pending[key] = (msg, time.monotonic(), st.endpoint)
                    while len(self._pending) > 10000:
                        self._pending.popitem(last=False)
            elif topic == b"reject":
                if len(parts) not in (2, 3):
                    raise MessageError(f"reject: {len(parts)} frames, expected 3 (topic, JSON, JPEG)")
                msg = parse_part(parts[1])
                st.observe_seq(msg.station_id, msg.seq)
                st.counters["rejects"] += 1
                key = (msg.station_id, msg.seq, msg.trigger_ts)
                self._pending.pop(key, None)
                self._framed.append(key)
                data = parts[2] if len(parts) == 3 else b""
                fmt = check_image(data) if data else None
                if data and fmt is None:
                    st.counters["corrupt_images"] += 1
                    log.warning("station %s: reject seq %d part %s: frame is not a readable JPEG/PNG (%d bytes)",
                                msg.station_id, msg.seq, msg.part_id, len(data))
                self._deliver(msg, data if fmt else None, fmt, st)
            # other topics: not subscribed (prefix matches only); ignored
        except MessageError as exc:
            st.bad(f"{topic[:16]!r}: {exc}")
            if st.counters["bad_messages"] <= 10 or st.counters["bad_messages"] % 1000 == 0:
                log.warning("station %s: bad %s message #%d: %s", st.endpoint, topic[:16], st.counters["bad_messages"], exc)

    def _expire_pending(self) -> None:
        now = time.monotonic()
        while self._pending:
            key, (msg, t, ep) = next(iter(self._pending.items()))
            if now - t < self._frame_wait:
                break
            del self._pending[key]
            st = self.states[ep]
            st.counters["missing_frames"] += 1
            self._deliver(msg, None, None, st)

    def _deliver(self, msg: PartMessage, image: bytes | None, fmt: str | None, st: StationState) -> None:
        try:
            self._on_reject(msg, image, fmt, st)
        except Exception:
            log.exception("filing reject seq %d of %s failed", msg.seq, msg.station_id)

    def _health(self, st: StationState) -> None:
        if self._on_health is not None:
            try:
                self._on_health(st)
            except Exception:
                log.exception("health callback failed")
