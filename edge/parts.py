"""Triggered parts and the exactly-one-answer guarantee.

Every ``TRG`` creates a :class:`Part` with a deadline. Whoever comes first answers it: the
inspection loop with its result, or the deadline watchdog with a fail-safe ``TIMEOUT``. The
other one is refused by :meth:`PartTracker.answer`, so a part is never answered twice and a late
result is never sent after a fail-safe.

The watchdog thread sleeps until the earliest deadline in its heap and is woken only when a part
with an earlier deadline arrives (not on every trigger, not on every answer): on a 2-core box each
wake-up is a thread competing for the GIL and a core just when a trigger or a RES is on its way.
Answered parts leave the heap lazily when they reach its head.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("edgeqc.parts")


@dataclass(eq=False)
class Part:
    """A triggered part. ``t_trigger``/``deadline``: time.monotonic() s; ``wall_trigger``: UNIX s."""

    seq: int
    part_id: str
    t_trigger: float
    wall_trigger: float
    deadline: float
    answered: bool = False
    answer_cause: str | None = None  # None = real result; else fail-safe cause
    t_answer: float | None = None
    tracked: bool = False  # registered with a PartTracker (has a deadline)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class PartTracker:
    """Owns pending parts and their deadlines.

    ``on_expire(part)`` is called from the watchdog thread for a part whose deadline passed
    unanswered; it must send the fail-safe through :meth:`answer`.
    """

    def __init__(self, on_expire: Callable[[Part], None]) -> None:
        self._on_expire = on_expire
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, Part]] = []
        self._tie = itertools.count()
        self._pending = 0
        self._waiters = 0  # threads in wait_all_answered (answer() notifies only them)
        self._stop = False
        self.late_results = 0
        self._thread = threading.Thread(target=self._watch, name="edgeqc-deadline", daemon=True)
        self._thread.start()

    def register(self, part: Part) -> None:
        part.tracked = True
        with self._cv:
            # the watchdog sleeps until the head's deadline: only an earlier one must wake it
            wake = not self._heap or part.deadline < self._heap[0][0]
            heapq.heappush(self._heap, (part.deadline, next(self._tie), part))
            self._pending += 1
            if wake:
                self._cv.notify_all()

    def answer(self, part: Part, send: Callable[[], object], cause: str | None = None) -> bool:
        """Answer ``part`` once: call ``send()`` and mark it, or return False if already answered."""
        with part._lock:
            if part.answered:
                if cause is None:
                    self.late_results += 1
                return False
            part.answered = True
            part.answer_cause = cause
            send()
            part.t_answer = time.monotonic()
        if not part.tracked:
            return True
        with self._cv:
            self._pending -= 1
            if self._waiters:
                self._cv.notify_all()
        return True

    @property
    def pending(self) -> int:
        with self._cv:
            return self._pending

    def wait_all_answered(self, timeout: float) -> bool:
        """Block until no part is pending (True) or ``timeout`` s passed (False)."""
        end = time.monotonic() + timeout
        with self._cv:
            self._waiters += 1
            try:
                while self._pending > 0:
                    left = end - time.monotonic()
                    if left <= 0:
                        return False
                    self._cv.wait(left)
                return True
            finally:
                self._waiters -= 1

    def _watch(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._stop:
                        return
                    while self._heap and self._heap[0][2].answered:  # answered: nothing to watch
                        heapq.heappop(self._heap)
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        break
                    timeout = None if not self._heap else max(0.0, self._heap[0][0] - time.monotonic())
                    self._cv.wait(timeout)
                _, _, part = heapq.heappop(self._heap)
            if not part.answered:
                try:
                    self._on_expire(part)
                except Exception:  # the watchdog must survive anything
                    log.exception("fail-safe answer for part %s failed", part.part_id)

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=2.0)
