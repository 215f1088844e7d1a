"""Shared helpers of the PLC link tests (real ptys, no timing assertions)."""

from __future__ import annotations

import time
from collections.abc import Callable

from edge.settings import PlcSettings


def fast_settings(port: str, **kw: object) -> PlcSettings:
    """PLC settings with short heartbeat/timeouts/backoff so link tests finish in seconds."""
    base: dict[str, object] = {
        "port": port, "heartbeat_interval_ms": 50, "read_timeout_ms": 50, "write_timeout_ms": 100,
        "reopen_backoff_ms": [20, 50, 100],
    }
    base.update(kw)
    return PlcSettings(**base)  # type: ignore[arg-type]


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Bounded wait for a condition set by another thread or the kernel (not a timing assertion)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()
