"""The exactly-one-answer guarantee: result vs deadline race."""

from __future__ import annotations

import threading
import time

from edge.parts import Part, PartTracker


def _part(seq: int, deadline_s: float) -> Part:
    now = time.monotonic()
    return Part(seq, f"P{seq}", now, time.time(), now + deadline_s)


def test_deadline_answers_once_and_late_result_is_refused() -> None:
    sent: list[str] = []
    lock = threading.Lock()
    tracker: PartTracker

    def expire(p: Part) -> None:
        tracker.answer(p, lambda: sent.append(f"{p.part_id}:TIMEOUT"), "TIMEOUT")

    tracker = PartTracker(expire)
    p = _part(1, 0.05)
    tracker.register(p)
    assert tracker.wait_all_answered(2.0)
    with lock:
        assert sent == ["P1:TIMEOUT"]
    assert tracker.answer(p, lambda: sent.append("P1:RES")) is False
    assert sent == ["P1:TIMEOUT"] and tracker.late_results == 1
    tracker.close()


def test_result_before_deadline_suppresses_failsafe() -> None:
    sent: list[str] = []
    tracker = PartTracker(lambda p: tracker.answer(p, lambda: sent.append("TIMEOUT"), "TIMEOUT"))
    parts = [_part(i, 0.2) for i in range(50)]
    for p in parts:
        tracker.register(p)
    for p in parts:
        assert tracker.answer(p, lambda p=p: sent.append(p.part_id))
    time.sleep(0.3)  # past every deadline: the watchdog must stay silent
    assert sent == [p.part_id for p in parts]
    assert tracker.pending == 0
    tracker.close()
