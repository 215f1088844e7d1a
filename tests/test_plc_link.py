"""PlcLink against PlcSimulator over a real pty pair (socat when installed, else the Python bridge)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial
from plc_util import fast_settings, wait_for

from edge.plc.link import PlcLink
from edge.plc.pty import PtyPair
from edge.plc.simulator import GARBAGE, PlcSimulator
from edge.plc.telegram import (
    Heartbeat,
    LineSplitter,
    TelegramError,
    Trigger,
    encode_ping,
    encode_result,
    encode_trigger,
    parse_edge_line,
)
from edge.settings import PlcSettings

BACKEND = "socat" if shutil.which("socat") else "python"
pytestmark = pytest.mark.timeout(30)


class Answering:
    """on_trigger that answers every TRG with a RES like the inspection loop would."""

    def __init__(self) -> None:
        self.link: PlcLink | None = None
        self.triggers: list[tuple[Trigger, float]] = []

    def __call__(self, trg: Trigger, t_arrival: float) -> None:
        self.triggers.append((trg, t_arrival))
        assert self.link is not None
        passed = trg.part_id.endswith(("0", "2", "4", "6", "8"))
        self.link.send(encode_result(trg.part_id, passed, "free" if passed else "crack", 0.9734))


@pytest.fixture
def pair() -> Iterator[PtyPair]:
    with PtyPair(BACKEND) as p:
        yield p


def open_link(port: str, **kw: object) -> tuple[PlcLink, Answering, list[str]]:
    answer, states = Answering(), list[str]()
    health = kw.pop("health", None)
    link = PlcLink(fast_settings(port, **kw), answer, states.append, health)  # type: ignore[arg-type]
    answer.link = link
    return link.start(), answer, states


def test_pair_backend_is_socat_when_installed(pair: PtyPair) -> None:
    assert pair.backend == BACKEND and pair.alive
    assert Path(pair.a).exists() and Path(pair.b).exists()


def test_every_trigger_answered_exactly_once(pair: PtyPair) -> None:
    link, answer, states = open_link(pair.b)
    with link:
        report = PlcSimulator(pair.a, rate_hz=500, count=40, ping_every=8).run(timeout=20)
    assert report.ok, report.to_dict()
    assert report.triggers_sent == 40 and report.answered == 40
    assert report.missing == report.duplicates == report.unexpected == report.late == []
    assert report.verdicts == {"P": 20, "F": 20}
    assert report.pings_sent == report.pongs == 5
    assert report.bad_checksum == 0 and report.malformed == 0
    assert len(report.latencies_ms) == 40 and all(x > 0 for x in report.latencies_ms)
    assert [t.part_id for t, _ in answer.triggers] == [f"P{i:06d}" for i in range(1, 41)]
    arrivals = [t for _, t in answer.triggers]
    assert arrivals == sorted(arrivals) and arrivals[-1] <= time.monotonic()
    s = link.stats
    assert (s["triggers"], s["pings"], s["naks_sent"], s["dropped"], s["write_errors"]) == (40, 5, 0, 0, 0)
    assert s["state"] == "closed" and states == ["ok"]


def test_garbage_gets_one_nak_each_and_link_continues(pair: PtyPair) -> None:
    garbage = [*GARBAGE.values(), b"TRG,G0006\r\n"]  # the last lacks *HH: MISSING_CHECKSUM when required
    link, answer, _ = open_link(pair.b, checksum_required=True)
    with link:
        report = PlcSimulator(pair.a, rate_hz=200, count=12, garbage=garbage, part_ids=["A1", "B2", "C3"]).run()
    expected = {reason: 1 for reason in GARBAGE} | {"MISSING_CHECKSUM": 1}
    assert report.naks == expected
    assert link.stats["naks_by_reason"] == expected and link.stats["naks_sent"] == 7
    assert report.garbage_sent == 7 and report.answered == 12  # triggers after every garbage line answered
    assert report.duplicates == [] and report.ok, report.to_dict()
    assert len(answer.triggers) == 12


def read_heartbeats(port: serial.SerialBase, until: Callable[[Heartbeat], bool], limit: float = 5.0) -> list[Heartbeat]:
    sp, seen, end = LineSplitter(), [], time.monotonic() + limit
    while time.monotonic() < end:
        for line in sp.feed(port.read(1) + port.read(port.in_waiting)):
            assert isinstance(line, bytes)
            tel = parse_edge_line(line)  # verifies the checksum
            assert isinstance(tel, Heartbeat)
            seen.append(tel)
            if until(tel):
                return seen
    raise AssertionError(f"condition not met within {limit} s; heartbeats seen: {seen}")


def test_heartbeat_ok_then_fault(pair: PtyPair) -> None:
    mode = {"health": "ok"}

    def health() -> bool:
        if mode["health"] == "raise":
            raise RuntimeError("camera probe crashed")
        return mode["health"] == "ok"

    with serial.serial_for_url(pair.a, timeout=0.1) as plc:
        link, _, _ = open_link(pair.b, health=health)
        with link:
            ok = read_heartbeats(plc, lambda h: h.ok and h.seq >= 2)
            mode["health"] = "fault"
            fault = read_heartbeats(plc, lambda h: not h.ok)
            mode["health"] = "ok"
            read_heartbeats(plc, lambda h: h.ok)
            mode["health"] = "raise"
            raised = read_heartbeats(plc, lambda h: not h.ok)
    beats = ok + fault
    assert [h.seq for h in beats] == list(range(beats[0].seq, beats[0].seq + len(beats)))  # +1 each, no gaps
    assert beats[0].seq == 0 and all(h.ok for h in ok)
    assert fault[-1] == Heartbeat(fault[-1].seq, False) and not raised[-1].ok
    assert link.stats["heartbeats_sent"] >= len(beats)


def test_missing_port_reported_lost_and_close_is_bounded(tmp_path: Path) -> None:
    link, _, states = open_link(str(tmp_path / "ttyNOPE"))
    assert states == ["lost"] and link.state == "lost"
    assert wait_for(lambda: link.stats["open_failures"] >= 2)
    assert link.send_result("A1", True, "free", 0.9)  # queued (never blocks); the writer discards it
    link.close()
    assert link.state == "closed"
    assert link.stats["dropped_results"] == 1  # discarded while lost, counted


def test_demo_port_must_be_resolved() -> None:
    with pytest.raises(ValueError, match="demo"):
        PlcLink(PlcSettings(port="demo"), lambda t, a: None)


def test_port_disappears_then_comes_back(tmp_path: Path) -> None:
    """Kill the pair under a running link (like unplugging a USB adapter), then recreate it under
    the same names (like plugging it back in): lost -> ok, and triggers are answered again."""
    a, b = tmp_path / "plc", tmp_path / "edge"
    first = PtyPair(BACKEND, link_a=a, link_b=b)
    link, _, states = open_link(str(b))
    try:
        with PlcSimulator(str(a), rate_hz=200, count=3) as sim:
            assert sim.wait_done(10)
        assert sim.report.answered == 3
        first.close()
        assert wait_for(lambda: link.state == "lost")
        assert states == ["ok", "lost"]
        s = link.stats
        assert s["read_errors"] + s["write_errors"] >= 1
        link.send_result("LOST1", False, "crack", 0.9)  # nobody to send to: discarded and counted
        assert wait_for(lambda: link.stats["dropped_results"] == 1)
        assert all(t.is_alive() for t in link._threads)
        with PtyPair(BACKEND, link_a=a, link_b=b) as second:
            assert wait_for(lambda: link.state == "ok")
            assert states == ["ok", "lost", "ok"] and link.stats["reconnects"] == 1
            report = PlcSimulator(second.a, rate_hz=200, count=5, ping_every=5).run(timeout=10)
            assert report.ok and report.answered == 5 and report.pongs == 1, report.to_dict()
    finally:
        t0 = time.monotonic()
        link.close()
        first.close()
    assert time.monotonic() - t0 < 10  # generous bound: close() must not hang


@pytest.mark.timeout(15)
def test_close_bounded_when_plc_stops_reading(pair: PtyPair) -> None:
    """Nobody reads the PLC end: the pty fills up, writes time out; send() never blocks and
    close() gives up flushing after its bound, counting what was not sent."""
    link, _, _ = open_link(pair.b)
    done = threading.Event()

    def flood() -> None:
        for i in range(3000):
            link.send_result(f"P{i}", True, "free", 0.5)
        done.set()

    threading.Thread(target=flood, daemon=True).start()
    assert done.wait(10)
    link.close(flush_timeout=0.3)
    s = link.stats
    assert s["state"] == "closed"
    assert s["telegrams_sent"] + s["dropped"] >= 3000  # every RES accounted for: written or counted
    assert s["dropped_results"] >= 1


def test_free_run_results_counted_in_listen_mode(pair: PtyPair) -> None:
    link, _, _ = open_link(pair.b)
    with link, PlcSimulator(pair.a, rate_hz=1, count=0, duration_s=0.5) as sim:
        for seq in range(1, 6):
            link.send_result(seq, seq % 2 == 0, "free" if seq % 2 == 0 else "crack", 0.8)
        assert sim.wait_done(5)
    report = sim.report
    assert report.free_run_results == 5 and report.verdicts == {"P": 2, "F": 3}
    assert report.unexpected == [] and report.ok


def test_python_bridge_pair() -> None:
    with PtyPair("python") as p:
        link, _, _ = open_link(p.b)
        with link:
            report = PlcSimulator(p.a, rate_hz=500, count=10, garbage=[GARBAGE["TOO_LONG"]]).run(timeout=10)
        assert report.ok and report.answered == 10 and report.naks == {"TOO_LONG": 1}, report.to_dict()
    assert not p.alive


def _record_writers(link: PlcLink) -> list[tuple[str, bytes]]:
    """Spy on the pyserial write path (writer thread, or a partial direct write): which thread
    wrote which bytes. A whole direct ``os.write`` by ``send_now`` does not appear here."""
    # open, and the first heartbeat (sent at start) written: nothing queued any more
    assert wait_for(lambda: link.state == "ok" and link._port is not None
                    and link.stats["telegrams_sent"] >= 1 and link._pending == 0)
    seen: list[tuple[str, bytes]] = []
    real = link._write_locked

    def write(port: serial.SerialBase, item: bytes, offset: int = 0) -> bool:
        seen.append((threading.current_thread().name, bytes(item[offset:])))
        return real(port, item, offset)

    link._write_locked = write  # type: ignore[method-assign]
    return seen


def _read_lines(p: serial.SerialBase, n: int, limit: float = 5.0) -> list[bytes]:
    """The next ``n`` lines that are not heartbeats (bounded wait)."""
    sp, lines = LineSplitter(), []
    end = time.monotonic() + limit
    while len(lines) < n and time.monotonic() < end:
        lines += [x for x in sp.feed(p.read(1) + p.read(p.in_waiting)) if not x.startswith(b"HBT")]
    return lines


def test_send_now_writes_from_the_calling_thread(pair: PtyPair) -> None:
    """The inspection loop's RES skips the writer thread when nothing is queued before it."""
    link, _, _ = open_link(pair.b, heartbeat_interval_ms=60_000)
    with link, serial.serial_for_url(pair.a, timeout=0.2) as plc:
        seen = _record_writers(link)
        tel = encode_result("A7", False, "crack", 0.9734)
        assert link.send_now(tel)
        # counted before send_now returned: written here, not by the writer thread
        assert link.stats["telegrams_sent"] == 2  # the first heartbeat and this RES
        assert seen == [] and link.stats["queue_depth"] == 0
        assert _read_lines(plc, 1) == [tel.rstrip(b"\r\n")]


def test_send_now_keeps_order_behind_queued_telegrams(pair: PtyPair) -> None:
    link, _, _ = open_link(pair.b, heartbeat_interval_ms=60_000)
    with link, serial.serial_for_url(pair.a, timeout=0.2) as plc:
        seen = _record_writers(link)
        first, second = encode_result("P1", True, "free", 0.5), encode_result("P2", False, "crack", 0.75)
        with link._port_lock:  # the writer is busy with `first` (holds it, waits for the port)
            assert link.send(first)
            assert wait_for(lambda: link._queue.qsize() == 0)  # taken by the writer, not written yet
            assert link.send_now(second)  # must not overtake `first`: goes to the queue
        assert wait_for(lambda: len(seen) == 2)
        assert seen == [("plc-writer", first), ("plc-writer", second)]
        assert _read_lines(plc, 2) == [first.rstrip(b"\r\n"), second.rstrip(b"\r\n")]


@pytest.mark.timeout(60)
def test_send_now_on_a_full_port_queues_and_keeps_order(pair: PtyPair) -> None:
    """The PLC stops reading: the buffers fill, the kernel refuses a direct write (EAGAIN) and
    send_now hands the telegram to the writer instead of blocking. Every RES is accounted for
    (read by the PLC or counted as dropped), and the PLC reads them in order."""
    link, _, _ = open_link(pair.b, heartbeat_interval_ms=60_000, write_timeout_ms=50)
    with link, serial.serial_for_url(pair.a, timeout=0.2) as plc:  # open, but not read yet
        seen = _record_writers(link)
        sent = 0
        while not seen and sent < 100_000:
            link.send_now(encode_result(f"P{sent:06d}", True, "free", 0.5))
            sent += 1
        assert seen, "the pty never filled up"
        assert seen[0][0] == "plc-writer" or seen[0][1]  # queued (or a partial write finished in order)
        for i in range(sent, sent + 20):  # while full: queued, not blocking
            link.send_now(encode_result(f"P{i:06d}", True, "free", 0.5))
        sent += 20
        got: list[bytes] = []
        while True:
            more = _read_lines(plc, 10_000, limit=1.0)
            got += more
            if not more and link.stats["queue_depth"] == 0 and link._pending == 0:
                break
        ids, fragments = [], 0
        for line in got:
            try:
                ids.append(parse_edge_line(line).part_id)  # type: ignore[union-attr]
            except TelegramError:  # the part of a telegram whose write timed out, on a line of its own
                fragments += 1
        assert ids == sorted(ids) and len(set(ids)) == len(ids)  # in order, none twice
        dropped = link.stats["dropped_results"]
        assert len(ids) + dropped == sent and fragments <= dropped


def test_send_now_on_a_lost_port_is_counted_not_raised(tmp_path: Path) -> None:
    link, _, _ = open_link(str(tmp_path / "no-such-tty"), reopen_backoff_ms=[1000])
    with link:
        assert link.state == "lost"
        assert link.send_now(encode_result("C4", False, "crack", 0.6))  # queued; the writer drops it
        assert wait_for(lambda: link.stats["dropped_results"] == 1)
        assert link.stats["telegrams_sent"] == 0


def test_trigger_work_runs_in_reader_while_the_port_is_still_read(pair: PtyPair) -> None:
    """on_trigger may return work (the inspection of a lone part): the link runs it in the reader
    thread that read the TRG after handing the port to its other reader thread, so PING, garbage
    and further TRGs are still answered while that work blocks (a hung model)."""
    release = threading.Event()
    ran_in: list[str] = []
    calls: list[str] = []
    link: PlcLink | None = None

    def on_trigger(trg: Trigger, _t: float) -> Callable[[], None] | None:
        calls.append(trg.part_id)
        assert link is not None
        if trg.part_id != "W1":
            link.send(encode_result(trg.part_id, True, "free", 0.9))
            return None
        readers = [t.name for t in threading.enumerate() if t.name.startswith("plc-reader")]
        assert len(readers) == 2  # the one that will run the work and the one that takes over

        def work() -> None:
            ran_in.append(threading.current_thread().name)
            release.wait(10)
            link.send(encode_result("W1", False, "crack", 0.8))

        return work

    link = PlcLink(fast_settings(pair.b), on_trigger).start()
    with link, serial.serial_for_url(pair.a, timeout=0.1) as plc:
        sp, got = LineSplitter(), []

        def read_until(n: int) -> None:
            end = time.monotonic() + 5
            while len(got) < n and time.monotonic() < end:
                for line in sp.feed(plc.read(1) + plc.read(plc.in_waiting)):
                    tel = parse_edge_line(line)
                    if not isinstance(tel, Heartbeat):
                        got.append(tel)

        plc.write(encode_trigger("W1"))
        assert wait_for(lambda: ran_in != [])
        plc.write(encode_ping() + b"GARBAGE\r\n" + encode_trigger("N2"))
        read_until(3)  # PONG, NAK, RES N2 -- while W1's work still blocks its thread
        assert [type(t).__name__ for t in got] == ["Pong", "Nak", "Result"]
        assert got[2].part_id == "N2" and calls == ["W1", "N2"] and not release.is_set()
        release.set()
        read_until(4)
    assert ran_in[0].startswith("plc-reader-")
    assert (got[3].part_id, got[3].code, got[3].label) == ("W1", "F", "crack")
    assert link.stats["naks_sent"] == 1 and link.stats["pings"] == 1


def test_a_ping_flood_never_crowds_out_a_result(pair: PtyPair) -> None:
    """600 PINGs, then a TRG, while the writer is held up: the PONGs fill only half the write
    queue (the rest shed and counted), so the RES still goes out."""
    link, answer, _ = open_link(pair.b)
    with link, serial.serial_for_url(pair.a, timeout=0.2) as plc:
        assert wait_for(lambda: link.state == "ok")
        with link._port_lock:  # the writer cannot write: everything the link sends waits in its queue
            plc.write(encode_ping() * 600 + encode_trigger("FLOOD1", False))
            assert wait_for(lambda: len(answer.triggers) == 1 and link.stats["pings"] == 600)
        lines: list[bytes] = []
        splitter = LineSplitter()
        end = time.monotonic() + 10
        while time.monotonic() < end and not any(x.startswith(b"RES,FLOOD1,") for x in lines):
            lines += [x for x in splitter.feed(plc.read(4096)) if isinstance(x, bytes)]
        pongs = sum(x.startswith(b"PONG") for x in lines)
        assert any(x.startswith(b"RES,FLOOD1,") for x in lines)  # before the fix: dropped, queue full
        # half the 256-telegram queue, plus the one the writer had taken when it met the lock
        assert 100 <= pongs <= 129
        st = link.stats
        assert st["dropped"] == 600 - pongs and st["dropped_results"] == 0
