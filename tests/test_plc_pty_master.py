"""DirectPty / PtyMaster: a real PlcLink on the slave of os.openpty(), PlcSimulator on the master port object."""

from __future__ import annotations

import os

import pytest
import serial
from plc_util import fast_settings, wait_for

from edge.plc.link import PlcLink
from edge.plc.pty import DirectPty, PtyMaster
from edge.plc.simulator import PlcSimulator
from edge.plc.telegram import Trigger, encode_result

pytestmark = pytest.mark.timeout(30)


def test_link_on_slave_simulator_on_master_and_master_survives_simulator_close() -> None:
    triggers: list[str] = []
    link: PlcLink | None = None

    def answer(trg: Trigger, _t: float) -> None:
        triggers.append(trg.part_id)
        passed = trg.part_id.endswith("A")
        assert link is not None
        link.send(encode_result(trg.part_id, passed, "free" if passed else "crack", 0.9))

    with DirectPty() as pty:
        settings = fast_settings(pty.path)
        link = PlcLink(settings, answer)
        with link.start():
            assert link.state == "ok"
            first_ids = [f"R1N{i:02d}{'A' if i % 2 else 'B'}" for i in range(12)]
            first = PlcSimulator(pty.master, rate_hz=200, count=12, part_ids=first_ids).run(timeout=20)
            assert not pty.master.closed  # the simulator did not close a port it was given
            second_ids = [f"R2N{i:02d}A" for i in range(7)]
            second = PlcSimulator(pty.master, rate_hz=200, count=7, part_ids=second_ids, ping_every=7).run(timeout=20)
        for report, ids in ((first, first_ids), (second, second_ids)):
            assert report.ok, report.to_dict()
            assert report.triggers_sent == report.answered == len(ids)
            assert report.missing == report.duplicates == report.unexpected == report.late == []
            assert report.bad_checksum == report.malformed == 0 and report.errors == []
            assert report.port == pty.path
        assert first.verdicts == {"P": 6, "F": 6}
        assert second.verdicts == {"P": 7} and second.pings_sent == second.pongs == 1
        assert triggers == first_ids + second_ids
        assert link.stats["triggers"] == 19 and link.stats["reconnects"] == 0
        assert not pty.master.closed
    assert pty.master.closed


def test_port_read_timeout_in_waiting_write_and_close() -> None:
    with DirectPty(timeout=0.05, write_timeout=0.2) as pty:
        slave = os.open(pty.path, os.O_RDWR | os.O_NOCTTY)
        try:
            m = pty.master
            assert m.read(1) == b""  # nothing there: returns after the timeout
            assert m.in_waiting == 0
            os.write(slave, b"TRG,A1\r\n")
            assert wait_for(lambda: m.in_waiting == 8)
            assert m.read(100) == b"TRG,A1\r\n"  # fewer than asked once the timeout passed; raw: no CR/LF change
            assert m.in_waiting == 0
            assert m.write(b"RES,A1,P,free,0.900\r\n") == 21
            assert os.read(slave, 100) == b"RES,A1,P,free,0.900\r\n"
            with pytest.raises(serial.SerialTimeoutException):  # nobody reads the slave: the pty fills up
                m.write(b"x" * (1 << 20))
        finally:
            os.close(slave)
        pty.master.close()
        with pytest.raises(serial.PortNotOpenError):
            pty.master.read(1)


def test_port_read_collects_until_size() -> None:
    master, slave = os.openpty()
    m = PtyMaster(master, timeout=5.0, name="test")
    try:
        os.write(slave, b"ab")
        os.write(slave, b"cd")
        assert m.read(4) == b"abcd"
    finally:
        m.close()
        os.close(slave)
    m.close()  # idempotent
