"""Shift boundaries: the start of the shift a moment belongs to, from ``review.shift_starts``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta


def shift_start(now: float, starts: Sequence[str]) -> float:
    """UNIX time (s) of the latest shift start at or before ``now``, in the server's local time.

    ``starts``: ``"HH:MM"`` strings (``review.shift_starts``). Example: starts 06:00/14:00/22:00,
    now 2025-11-30 03:10 -> 2025-11-29 22:00.
    """
    t = datetime.fromtimestamp(now).astimezone()
    best: datetime | None = None
    for day in (0, -1):
        base = (t + timedelta(days=day)).replace(second=0, microsecond=0)
        for s in starts:
            h, m = (int(x) for x in s.split(":"))
            cand = base.replace(hour=h, minute=m)
            # recompute the UTC offset for that wall time (DST changes between days)
            cand = cand.replace(tzinfo=None).astimezone()
            if cand <= t and (best is None or cand > best):
                best = cand
    assert best is not None
    return best.timestamp()
