"""CPU priority of background threads: the trigger -> RES path first.

On a small box (2 cores here, 4-6 on a Jetson) the threads that answer the PLC (PLC reader and
writer, inspection, model worker, deadline watchdog) share the cores with background work that
is never urgent within one part: decoding the next replay frame ahead, the outputs (ZeroMQ JSON,
reject JPEGs, metrics), the archive writer, the status publisher. Those call
:func:`background_thread` when they start, so under contention the kernel runs the answer path
first. Priorities do not change the GIL's hand-over order; they decide who gets a core.

Linux: ``setpriority(PRIO_PROCESS, tid, nice)`` applies to one thread (setpriority(2), "BUGS":
per-thread on Linux/NPTL); raising nice needs no privilege. Elsewhere, or when refused, nothing
changes.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("edgeqc.priority")

BACKGROUND_NICE = 5
"""Nice increment of background threads (CFS weight 1024 -> 335: about a third of the CPU share
of a normal thread under contention; sched(7), "The nice value")."""


def background_thread(increment: int = BACKGROUND_NICE) -> bool:
    """Lower the calling thread's CPU priority by ``increment`` nice steps (max nice 19).

    Returns:
        True if it was lowered; False where not supported or refused (never raises).
    """
    setp = getattr(os, "setpriority", None)
    if setp is None or not hasattr(threading, "get_native_id"):
        return False
    try:
        tid = threading.get_native_id()
        now = os.getpriority(os.PRIO_PROCESS, tid)
        setp(os.PRIO_PROCESS, tid, min(19, now + increment))
        return True
    except OSError as exc:
        log.debug("thread priority not lowered: %s", exc)
        return False
