"""``edgeqc plc-sim`` against a PlcLink over a pty pair: output, JSON report and exit codes."""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.plc.cli import register
from edge.plc.link import PlcLink
from edge.plc.pty import PtyPair
from edge.plc.telegram import Trigger
from edge.settings import PlcSettings

pytestmark = pytest.mark.timeout(30)


def plc_sim(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="edgeqc")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["plc-sim", *argv])
    return args.func(args)


@pytest.fixture
def pair() -> Iterator[PtyPair]:
    with PtyPair("socat" if shutil.which("socat") else "python") as p:
        yield p


def test_plc_sim_all_answered(pair: PtyPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    holder: dict[str, PlcLink] = {}

    def on_trigger(trg: Trigger, _t: float) -> None:
        holder["link"].send_result(trg.part_id, trg.part_id != "B2", "crack" if trg.part_id == "B2" else "free", 0.97)

    link = PlcLink(PlcSettings(port=pair.b, heartbeat_interval_ms=50, pass_code="OK", fail_code="NG"), on_trigger)
    holder["link"] = link
    out = tmp_path / "report.json"
    with link:
        rc = plc_sim("--port", pair.a, "--rate", "100", "--parts", "A1,B2,C3", "--count", "6",
                     "--ping-every", "3", "--garbage", "--json", str(out))
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "RES B2 NG crack 0.970" in text and "NAK TOO_LONG" in text and "PONG" in text
    assert "plc-sim report for" in text and ": OK" in text
    report = json.loads(out.read_text())
    assert report["ok"] is True and report["triggers_sent"] == 6 and report["answered"] == 6
    assert report["verdicts"] == {"OK": 4, "NG": 2} and report["pongs"] == 2
    assert report["latency_ms"]["count"] == 6 and report["naks"]["TOO_LONG"] == 1


def test_plc_sim_nobody_answers_exit_1(pair: PtyPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    rc = plc_sim("--port", pair.a, "--rate", "100", "--count", "3", "--timeout-ms", "100", "--quiet", "--json", str(out))
    assert rc == 1
    report = json.loads(out.read_text())
    assert report["missing"] == ["P000001", "P000002", "P000003"] and report["ok"] is False
    assert "missing: P000001, P000002, P000003" in capsys.readouterr().out


def test_plc_sim_bad_port_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert plc_sim("--port", str(tmp_path / "ttyNOPE"), "--count", "1") == 2
    assert "cannot open" in capsys.readouterr().err
    assert plc_sim("--port", "x", "--parts", "A/1") == 2
    assert "part_id" in capsys.readouterr().err
