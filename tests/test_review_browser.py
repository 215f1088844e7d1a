"""The review page in Debian's Chromium (headless, driven by Playwright): a reject published by a
real ZeroMQ PUB appears live, the operator's verdicts (button and keyboard) land in the SQLite
store and in the export, and survive a restart of the review server."""

from __future__ import annotations

import csv
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from review_util import FakeStation, jpeg, part_message, wait_for

from edge.review.export import export_review
from edge.review.server import ReviewServer
from edge.review.store import ReviewStore
from edge.settings import load_settings

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file() or shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} missing (Debian package 'chromium'; CI installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="python package playwright not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def start_server(db: Path, endpoint: str, port: int = 0) -> ReviewServer:
    s = load_settings(review={"port": port, "db_path": str(db), "stations": [endpoint]})
    return ReviewServer(s.review, s.decision.pass_classes).start()


def test_live_reject_verdict_store_export_restart(browser: Any, tmp_path: Path) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    station = FakeStation(ctx)
    db = tmp_path / "review.sqlite"
    srv = start_server(db, station.endpoint)
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # console errors, except the 422 the page itself provokes and explains ("Which defect?")
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "status of 422" not in m.text else None)
    try:
        st = srv.feed.states[station.endpoint]  # type: ignore[union-attr]
        wait_for(lambda: st.counters["statuses"] > 0, what="ZeroMQ subscription", tick=station.status)
        page.goto(srv.url)
        page.wait_for_selector("#conn.on", timeout=15000)   # SSE connected
        page.fill("#who", "anna")
        page.dispatch_event("#who", "change")
        station.status()
        page.wait_for_selector(".station:has-text('station-1'):has-text('42.0 parts/min')", timeout=10000)

        # 1) a reject is published and appears live
        frame1 = jpeg(11)
        t0 = time.monotonic()
        station.reject(part_message(1, part_id="A1", label="crack", probability=0.93), frame1)
        page.wait_for_selector("#rejects .reject", timeout=10000)
        latency = time.monotonic() - t0
        print(f"\nreject published -> shown in the page: {latency * 1000:.0f} ms")
        assert page.inner_text("#d-label") == "crack"
        assert page.inner_text("#d-part").startswith("A1")
        # (polled from Python: wait_for_function would need 'unsafe-eval', which the page's CSP forbids)
        wait_for(lambda: page.evaluate("document.querySelector('#detail-img').naturalWidth") == 128,
                 what="the frame decoded in the page")
        assert page.inner_text("#rejects .reject .badge") == "open"

        # 2) the operator taps "part is good" (a false reject)
        page.click("#btn-good")
        page.wait_for_selector("#verdict-state.good", timeout=10000)
        assert "Part is good (false reject)" in page.inner_text("#verdict-state")
        assert "by anna" in page.inner_text("#verdict-state")
        page.wait_for_selector("#shift-frr:has-text('100.0 %')", timeout=10000)

        # 3) a second reject, judged with the keyboard: D = confirm defect
        station.reject(part_message(2, part_id="A2", label="blowhole", probability=0.81), jpeg(12))
        page.wait_for_selector("#rejects .reject >> nth=1", timeout=10000)
        page.wait_for_selector("#d-label:has-text('blowhole')", timeout=10000)  # auto-selected
        page.keyboard.press("d")
        page.wait_for_selector("#verdict-state.defect", timeout=10000)

        # an 'uncertain' reject (top class is the pass class): D asks for the class, 1 = blowhole
        station.reject(part_message(3, part_id="U3", label="free", probability=0.45, reason="uncertain"), jpeg(14))
        page.wait_for_selector("#d-part:has-text('U3')", timeout=10000)
        page.keyboard.press("d")
        page.wait_for_selector("#msg:has-text('Which defect?')", timeout=10000)
        assert page.locator("#classes button").all_inner_texts()[0].split() == ["1", "blowhole"]
        page.keyboard.press("1")
        page.wait_for_selector("#verdict-state.defect:has-text('blowhole')", timeout=10000)

        # the verdicts are in the SQLite file
        con = sqlite3.connect(db)
        got = con.execute("SELECT part_id, review, true_class, reviewed_by FROM rejects ORDER BY seq").fetchall()
        con.close()
        assert got == [("A1", "good", None, "anna"), ("A2", "defect", None, "anna"), ("U3", "defect", "blowhole", "anna")]

        # ... and in the export (false reject under the pass class)
        with ReviewStore(db) as store:
            summary = export_review(store, tmp_path / "export", pass_class="free")
        assert summary.images == {"free": 1, "blowhole": 2}
        (good_file,) = (tmp_path / "export" / "free").iterdir()
        assert good_file.read_bytes() == frame1
        with (tmp_path / "export" / "verdicts.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [(r["part_id"], r["class"], r["verdict"], r["reviewed_by"]) for r in rows] == [
            ("A1", "free", "good", "anna"), ("A2", "blowhole", "defect", "anna"), ("U3", "blowhole", "defect", "anna")]

        assert errors == []

        # 4) restart the review server on the same database and port, page left open: it
        #    reconnects by itself, and a fresh load still shows the verdicts
        port = srv.port
        srv.stop()
        page.wait_for_selector("#conn.off", timeout=10000)
        srv = start_server(db, station.endpoint, port=port)
        st = srv.feed.states[station.endpoint]  # type: ignore[union-attr]
        wait_for(lambda: st.counters["statuses"] > 0, what="ZeroMQ subscription", tick=station.status)
        page.wait_for_selector("#conn.on", timeout=15000)
        errors.clear()  # the browser logged its refused reconnection attempts while the server was down
        station.reject(part_message(4, part_id="A3", label="crack", probability=0.88), jpeg(13))
        page.wait_for_selector("#rejects .reject:has-text('part A3')", timeout=10000)
        page.reload()
        page.wait_for_selector("#rejects .reject >> nth=3", timeout=15000)
        assert page.locator("#rejects .reject .badge").all_inner_texts() == ["open", "defect", "defect", "good"]
        page.click("#rejects .reject:has-text('part A1')")
        page.wait_for_selector("#verdict-state.good", timeout=10000)
        assert "by anna" in page.inner_text("#verdict-state")
        assert errors == []
    finally:
        page.close()
        srv.stop()
        station.close()
        ctx.term()


def test_rejects_of_a_running_demo_station_appear_live(browser: Any, tmp_path: Path) -> None:
    """Issue 5's "with edgeqc demo running": a real demo station (demo model over rendered parts,
    free-run, ZeroMQ on loopback) feeds the review page; its rejects show up in Chromium and a
    verdict lands in the store and in an export that `edgeqc evaluate` accepts as a labelled folder."""
    import socket

    from edge.app import Station
    from edge.review.export import export_review as export

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{sk.getsockname()[1]}"
    settings = load_settings(
        camera={"source": "demo", "loop": True, "fps": 20},
        plc={"enabled": False, "mode": "free_run"},
        zmq={"endpoint": endpoint, "status_interval_ms": 200},
        archive={"enabled": False}, metrics={"enabled": False},
    )
    station = Station(settings)
    db = tmp_path / "review.sqlite"
    srv = start_server(db, endpoint)
    page = browser.new_page()
    try:
        time.sleep(0.5)  # let the SUB connect before the first reject
        station.start()
        page.goto(srv.url)
        page.wait_for_selector("#conn.on", timeout=15000)
        page.wait_for_selector("#rejects .reject", timeout=30000)
        label = page.inner_text("#d-label")
        assert label in ("scratch", "hole", "crack", "uncertain")
        page.fill("#who", "ben")
        page.dispatch_event("#who", "change")
        page.click("#btn-good")  # the operator says: false reject
        store = ReviewStore(db, ("free",))
        wait_for(lambda: list(store.reviewed()), what="verdict stored")
    finally:
        station.stop()
        page.close()
        srv.stop()
    out = tmp_path / "export"
    summary = export(ReviewStore(db, ("free",)), out, "free")
    assert (out / "free").is_dir() and len(list((out / "free").iterdir())) >= 1
    assert summary is not None
    import subprocess
    import sys

    from edge.app import DEMO_MODEL

    r = subprocess.run([sys.executable, "-m", "edge.cli", "evaluate", "--val", str(out), "--fp32", str(DEMO_MODEL),
                        "--no-progress"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
