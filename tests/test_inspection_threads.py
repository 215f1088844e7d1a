"""Which thread inspects a part, and that a hung model still leaves every trigger answered.

A lone trigger (station idle) is inspected in the PLC reader thread that read it, after the link
handed the port to its other reader thread (edge.plc.link, Leader/Followers); triggers that
arrive while a part is being inspected are queued and batched by the inspection thread. Real
Station: shared EfficientNet-Lite0 under ONNX Runtime, shared val images, a socat pty pair with
the test playing the PLC on the other end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import serial

from edge.app import Station
from edge.plc.pty import PtyPair
from edge.plc.telegram import (
    Heartbeat,
    LineSplitter,
    Pong,
    Result,
    encode_ping,
    encode_trigger,
    parse_edge_line,
)
from edge.settings import load_settings

pytestmark = pytest.mark.timeout(120)
GATE = threading.Event()  # model calls wait for it (set = run at once)


def wait_for(cond: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met"
        time.sleep(0.002)


class Plc:
    """The PLC end of the pty: writes telegrams, collects the station's non-heartbeat replies."""

    def __init__(self, port: str) -> None:
        self.port = serial.serial_for_url(port, timeout=0.05)
        self.sp = LineSplitter()
        self.got: list[Any] = []

    def read_until(self, n: int, timeout: float = 20.0) -> list[Any]:
        end = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < end:
            for line in self.sp.feed(self.port.read(1) + self.port.read(self.port.in_waiting)):
                tel = parse_edge_line(line)
                if not isinstance(tel, Heartbeat):
                    self.got.append(tel)
        assert len(self.got) >= n, self.got
        return self.got

    def results(self) -> dict[str, Result]:
        out: dict[str, Result] = {}
        for t in self.got:
            if isinstance(t, Result):
                assert t.part_id not in out, f"second RES for {t.part_id}"
                out[t.part_id] = t
        return out


@pytest.fixture
def station(tmp_path: Path, effnet_path: Path, val_dir: Path) -> Iterator[tuple[Station, Plc, list[str]]]:
    s = load_settings(
        camera={"source": str(val_dir / "crack"), "loop": True},
        model={"path": str(effnet_path), "resize": "stretch", "interpolation": "pillow_bilinear",
               "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
        decision={"pass_classes": ["free"]},
        plc={"port": "demo", "deadline_ms": 400, "heartbeat_interval_ms": 1000},
        zmq={"enabled": False}, archive={"enabled": False}, metrics={"enabled": False},
    )
    with PtyPair(backend="socat") as pty:
        st = Station(s, plc_port=pty.a)
        threads: list[str] = []
        real_infer = st.backend.infer

        def infer(batch: np.ndarray) -> np.ndarray:
            threads.append(f"{threading.current_thread().name}:{len(batch)}")
            GATE.wait(10)
            return real_infer(batch)

        st.backend.infer = infer  # type: ignore[method-assign]
        st.start()
        plc = Plc(pty.b)
        try:
            yield st, plc, threads
        finally:
            st.stop()
            plc.port.close()


def test_lone_triggers_run_in_the_plc_reader_a_burst_is_batched(station: tuple[Station, Plc, list[str]]) -> None:
    st, plc, threads = station
    busy = st.inspector._busy  # held while a part is being inspected (results included)
    GATE.set()
    for i in range(6):  # one at a time, each on an idle station: each is alone
        plc.port.write(encode_trigger(f"L{i}"))
        plc.read_until(i + 1)
        wait_for(lambda: not busy.locked())
    assert [t.split(":")[0].startswith("plc-reader-") for t in threads] == [True] * 6, threads
    # B0 alone -> a PLC reader thread; B1..B4 arrive while B0's model call runs -> queued, then
    # one batch of 4 in the inspection thread
    GATE.clear()
    plc.port.write(encode_trigger("B0"))
    wait_for(lambda: len(threads) == 7)
    plc.port.write(b"".join(encode_trigger(f"B{i}") for i in range(1, 5)))
    wait_for(lambda: st.link is not None and st.link.stats["triggers"] == 11)
    GATE.set()
    res = plc.read_until(11)
    by_id = plc.results()
    assert sorted(by_id) == sorted([f"L{i}" for i in range(6)] + [f"B{i}" for i in range(5)])
    assert all(r.failsafe is None and r.label in st.backend.spec.labels for r in by_id.values()), res
    assert threads[6].startswith("plc-reader-") and threads[6].endswith(":1") and threads[7:] == ["edgeqc-inspect:4"]
    assert st.inspector.stats["batched_parts"] == 11 and st.inspector.stats["batches"] == 8


def test_hung_model_every_trigger_still_answered(station: tuple[Station, Plc, list[str]]) -> None:
    st, plc, _ = station
    release = threading.Event()
    real_infer = st.backend.infer

    def hanging(batch: np.ndarray) -> np.ndarray:
        if not release.is_set():
            release.wait(10)  # a model call that hangs until the test lets it go
        return real_infer(batch)

    st.backend.infer = hanging  # type: ignore[method-assign]
    GATE.set()
    plc.port.write(encode_trigger("H1"))
    time.sleep(0.05)  # H1's inspection is hanging in a PLC reader thread now
    plc.port.write(encode_ping() + encode_trigger("H2"))
    got = plc.read_until(3, timeout=5)  # PONG at once; H1 and H2 fail-safe at their 400 ms deadline
    assert isinstance(got[0], Pong)
    by_id = plc.results()
    assert (by_id["H1"].failsafe, by_id["H2"].failsafe) == ("TIMEOUT", "TIMEOUT")
    release.set()
    plc.port.write(encode_trigger("H3"))
    plc.read_until(4)
    by_id = plc.results()  # also: no second (late) RES for H1 or H2
    assert by_id["H3"].failsafe is None and sorted(by_id) == ["H1", "H2", "H3"]


def test_hung_lone_part_starves_the_systemd_watchdog(station: tuple[Station, Plc, list[str]],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A model call hanging in a PLC reader thread stops the inspection loop's watchdog pings (as
    a hang in the inspection thread itself would); they resume once the call returns."""
    import edge.inspection

    st, plc, _ = station
    monkeypatch.setattr(edge.inspection, "LONE_HUNG_S", 0.3)
    pings: list[float] = []
    st.inspector.on_loop = lambda: pings.append(time.monotonic())
    wait_for(lambda: len(pings) >= 2)  # the idle loop pings every turn (0.1 s)
    GATE.clear()  # the next model call hangs
    plc.port.write(encode_trigger("S1"))
    plc.read_until(1, timeout=5)  # fail-safe TIMEOUT at the 400 ms deadline
    time.sleep(0.2)
    n = len(pings)
    time.sleep(0.5)
    assert len(pings) == n  # no ping while the part hangs
    GATE.set()
    wait_for(lambda: len(pings) > n)
    assert plc.results()["S1"].failsafe == "TIMEOUT"


def test_overload_sheds_parts_that_cannot_make_their_deadline(station: tuple[Station, Plc, list[str]]) -> None:
    """A part whose model call would end after its deadline gets its TIMEOUT at once, without a
    model call (the time goes to parts that can still make it); the others run as usual."""
    st, plc, threads = station
    GATE.set()
    insp = st.inspector
    insp._per_part_s = 1.0  # as if the model took 1 s per part: nothing fits in 400 ms
    plc.port.write(encode_trigger("O1"))
    plc.read_until(1)
    assert plc.results()["O1"].failsafe == "TIMEOUT"
    assert insp.stats["shed_late"] == 1 and threads == []  # no model call was made for it
    insp._per_part_s = 0.0
    plc.port.write(encode_trigger("O2"))
    plc.read_until(2)
    assert plc.results()["O2"].failsafe is None and len(threads) == 1
