"""What the review server knows about each station it follows: link, health, counters, gaps.

Pure bookkeeping (no sockets), fed by :mod:`edge.review.live`.

Sequence numbers (``seq``, one per inspected part, over topics ``result`` and ``reject``) tell
missed messages from a restarted station:

* ``seq == last + 1``: in order. ``seq`` in ``{last, last - 1}``: the companion message of a
  part already seen (``result`` and ``reject`` carry the same seq) — ignored.
* ``seq > last + 1``: ``seq - last - 1`` parts were missed (subscriber too slow, publisher's
  queue full, link down) — counted in ``seq_gaps``.
* ``seq < last - 1``, or ``seq <= last`` on the first message after the link came back: the
  station restarted — counted in ``restarts``. Its counter began again at 1
  (edge/inspection.py), so ``seq - 1`` parts went out before this subscriber caught up and are
  counted in ``seq_gaps``.

The first message ever seen on an endpoint counts no gap: whatever the station published before
the review server subscribed is history, not loss (import it with ``--archive``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

COUNTERS = ("results", "rejects", "statuses", "seq_gaps", "restarts", "bad_messages", "missing_frames",
            "corrupt_images")


@dataclass
class StationState:
    """One followed endpoint (``tcp://host:port``) and the station(s) publishing on it.

    ``connected``: the TCP link is up (ZeroMQ socket monitor). ``status``: the last ``status``
    JSON, ``status_received``: when it arrived (UNIX s, review-server clock).
    """

    endpoint: str
    station_id: str | None = None
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    status: dict[str, Any] | None = None
    status_received: float | None = None
    last_message: float | None = None
    last_error: str | None = None
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    _last_seq: dict[str, int] = field(default_factory=dict, repr=False)
    _resync: set[str] = field(default_factory=set, repr=False)

    def link_up(self) -> None:
        if not self.connected:
            self.connected = True
            self.connects += 1

    def link_down(self) -> None:
        if self.connected:
            self.connected = False
            self.disconnects += 1
        # After an outage the station may have restarted: judge the next seq accordingly.
        self._resync = set(self._last_seq)

    def observe_seq(self, station_id: str, seq: int) -> str:
        """Account one ``seq``; returns ``"first"``, ``"ok"``, ``"companion"``, ``"gap"`` or ``"restart"``."""
        self.station_id = station_id
        self.last_message = time.time()
        last = self._last_seq.get(station_id)
        resync = station_id in self._resync
        self._resync.discard(station_id)
        if last is None:
            self._last_seq[station_id] = seq
            return "first"
        if seq == last + 1:
            self._last_seq[station_id] = seq
            return "ok"
        if seq > last + 1:
            self.counters["seq_gaps"] += seq - last - 1
            self._last_seq[station_id] = seq
            return "gap"
        if resync or seq < last - 1:
            self.counters["restarts"] += 1
            self.counters["seq_gaps"] += max(0, seq - 1)
            self._last_seq[station_id] = seq
            return "restart"
        return "companion"

    def observe_status(self, status: dict[str, Any]) -> None:
        self.station_id = status.get("station_id", self.station_id)
        self.status = status
        self.status_received = self.last_message = time.time()
        self.counters["statuses"] += 1

    def bad(self, why: str) -> None:
        self.counters["bad_messages"] += 1
        self.last_error = why

    def to_dict(self) -> dict[str, Any]:
        """The JSON the page shows (``age_s``: seconds since the last status, None if none yet)."""
        now = time.time()
        return {
            "endpoint": self.endpoint,
            "station_id": self.station_id,
            "connected": self.connected,
            "connects": self.connects,
            "disconnects": self.disconnects,
            "status": self.status,
            "status_age_s": round(now - self.status_received, 1) if self.status_received else None,
            "last_error": self.last_error,
            **self.counters,
        }
