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


def test_earlier_deadline_registered_later_still_expires_first() -> None:
    """The watchdog sleeps until the head's deadline; a new part with an earlier deadline must
    wake it (it is not woken for later deadlines or for answers)."""
    expired: list[str] = []
    done = threading.Event()
    tracker: PartTracker

    def expire(p: Part) -> None:
        tracker.answer(p, lambda: expired.append(p.part_id), "TIMEOUT")
        done.set()

    tracker = PartTracker(expire)
    slow, fast = _part(1, 30.0), _part(2, 0.05)
    tracker.register(slow)
    time.sleep(0.05)  # the watchdog is now asleep until slow's deadline, 30 s away
    tracker.register(fast)
    assert done.wait(5.0)  # bounded wait for the other thread, not a timing assertion
    assert expired == ["P2"] and tracker.pending == 1
    assert tracker.answer(slow, lambda: None)
    assert tracker.wait_all_answered(1.0) and expired == ["P2"]
    tracker.close()


def test_answered_parts_at_the_head_do_not_hide_a_later_deadline() -> None:
    """Parts answered before their deadline leave the heap lazily; the next unanswered one still
    gets its fail-safe."""
    expired: list[str] = []
    tracker: PartTracker = PartTracker(lambda p: tracker.answer(p, lambda: expired.append(p.part_id), "TIMEOUT"))
    early = [_part(i, 0.05) for i in range(5)]
    late = _part(9, 0.15)
    for p in (*early, late):
        tracker.register(p)
    for p in early:
        assert tracker.answer(p, lambda: None)
    assert tracker.wait_all_answered(5.0)
    assert expired == ["P9"]
    tracker.close()
