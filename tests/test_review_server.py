"""Review server over real HTTP (uvicorn on a free loopback port): API, SSE, token, Host check,
archive import, clean shutdown with a live event stream open."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from review_util import FakeStation, jpeg, part_message, wait_for

from edge.review.server import ReviewServer
from edge.settings import ConfigError, load_settings

TOKEN = "s3cret-line3"


def make_server(tmp_path: Path, archive: Path | None = None, **review: Any) -> ReviewServer:
    cfg = {"port": 0, "db_path": str(tmp_path / "review.sqlite"), "stations": [], **review}
    s = load_settings(review=cfg)
    return ReviewServer(s.review, s.decision.pass_classes, archive=archive)


def request(srv: ReviewServer, method: str, path: str, body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    h = {"Host": f"127.0.0.1:{srv.port}", **(headers or {})}
    data = None
    if body is not None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        h.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    conn.close()
    return out


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    c: zmq.Context[Any] = zmq.Context()
    yield c
    c.term()


def test_non_loopback_needs_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"review.host = '0.0.0.0' is not a loopback address: a login token is required"):
        make_server(tmp_path, host="0.0.0.0")
    with pytest.raises(ConfigError, match="review.token: 3 characters; expected at least 8"):
        make_server(tmp_path, host="0.0.0.0", token="abc")


def test_token_checked_on_every_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edge.review.auth.FAIL_DELAY_S", 0.01)
    srv = make_server(tmp_path, token=TOKEN).start()
    try:
        status, _, body = request(srv, "GET", "/api/rejects")
        assert status == 401 and json.loads(body) == {"detail": "login required (token)"}
        status, hdr, _ = request(srv, "GET", "/")
        assert status == 303 and hdr["location"] == "/login?next=%2F"
        assert request(srv, "GET", "/static/app.js")[0] == 303  # no asset without login either
        assert request(srv, "GET", "/api/rejects", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert request(srv, "GET", "/api/rejects", headers={"X-EdgeQC-Token": TOKEN})[0] == 200
        assert request(srv, "GET", "/api/rejects", headers={"X-EdgeQC-Token": TOKEN + "x"})[0] == 401
        # login form -> cookie -> page
        status, _, page = request(srv, "GET", "/login")
        assert status == 200 and b'name="token"' in page
        status, hdr, _ = request(srv, "POST", "/login", body=f"token={TOKEN}&next=/".encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 303 and hdr["location"] == "/"
        cookie = hdr["set-cookie"].split(";")[0]
        assert TOKEN not in cookie and "HttpOnly" in hdr["set-cookie"] and "SameSite=Strict" in hdr["set-cookie"]
        status, _, page = request(srv, "GET", "/", headers={"Cookie": cookie})
        assert status == 200 and b"edgeqc review" in page
        assert request(srv, "GET", "/api/stats", headers={"Cookie": cookie})[0] == 200
        # bookmarkable ?token= logs in and drops the token from the address
        status, hdr, _ = request(srv, "GET", f"/?token={TOKEN}")
        assert status == 303 and hdr["location"] == "/" and hdr["set-cookie"].split(";")[0] == cookie
        status, _, _ = request(srv, "POST", "/login", body=b"token=wrong&next=//evil.example",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 401
    finally:
        srv.stop()


def test_loopback_host_header_only(tmp_path: Path) -> None:
    srv = make_server(tmp_path).start()
    try:
        assert request(srv, "GET", "/api/stats")[0] == 200
        assert request(srv, "GET", "/api/stats", headers={"Host": f"localhost:{srv.port}"})[0] == 200
        # a DNS-rebinding page would send its own host name
        assert request(srv, "GET", "/api/stats", headers={"Host": "evil.example:8080"})[0] == 421
    finally:
        srv.stop()


def read_events(srv: ReviewServer, n: int, out: list[tuple[str, Any]], ready: threading.Event) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    conn.request("GET", "/api/events", headers={"Host": f"127.0.0.1:{srv.port}"})
    r = conn.getresponse()
    assert r.getheader("content-type", "").startswith("text/event-stream")
    event = None
    while len(out) < n:
        line = r.fp.readline().decode()
        if not line:
            break
        line = line.rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            out.append((event or "message", json.loads(line[6:])))
            if event == "hello":
                ready.set()
    conn.close()


def test_live_reject_over_sse_and_verdict_api(tmp_path: Path, ctx: zmq.Context[Any]) -> None:
    station = FakeStation(ctx)
    srv = make_server(tmp_path, stations=[station.endpoint]).start()
    try:
        st = srv.feed.states[station.endpoint]  # type: ignore[union-attr]
        wait_for(lambda: st.counters["statuses"] > 0, what="subscription", tick=station.status)
        events: list[tuple[str, Any]] = []
        ready = threading.Event()
        reader = threading.Thread(target=read_events, args=(srv, 4, events, ready), daemon=True)
        reader.start()
        assert ready.wait(10)
        frame = jpeg(5)
        station.reject(part_message(9, part_id="X9", label="break", probability=0.77), frame)
        wait_for(lambda: any(e == "reject" for e, _ in events), what="reject event")
        row = next(d for e, d in events if e == "reject")
        assert (row["part_id"], row["label"], row["probability"], row["has_image"]) == ("X9", "break", 0.77, True)
        assert row["top"][0] == ["break", 0.77]
        status, hdr, img = request(srv, "GET", f"/api/rejects/{row['id']}/image")
        assert status == 200 and hdr["content-type"] == "image/jpeg" and img == frame

        status, _, body = request(srv, "POST", f"/api/rejects/{row['id']}/verdict",
                                  body={"verdict": "good", "true_class": "crack", "who": "anna"})
        assert status == 422 and "expected a pass class" in json.loads(body)["detail"]
        status, _, body = request(srv, "POST", f"/api/rejects/{row['id']}/verdict", body={"verdict": "good", "who": "anna"})
        assert status == 200 and json.loads(body)["review"] == "good"
        assert request(srv, "POST", "/api/rejects/4711/verdict", body={"verdict": "good"})[0] == 404
        # a cross-site form post (no JSON content type) is not taken as a verdict
        status, _, _ = request(srv, "POST", f"/api/rejects/{row['id']}/verdict", body=b'{"verdict": "defect"}',
                               headers={"Content-Type": "text/plain"})
        assert status == 422
        wait_for(lambda: any(e == "verdict" for e, _ in events), what="verdict event")
        status, _, body = request(srv, "GET", "/api/stats")
        stats = json.loads(body)
        assert (stats["rejects"], stats["good"], stats["false_reject_rate"]) == (1, 1, 1.0)
        status, _, body = request(srv, "GET", "/api/rejects?reviewed=false")
        assert json.loads(body)["total"] == 0
        status, _, body = request(srv, "GET", f"/api/rejects/{row['id']}")
        assert [h["who"] for h in json.loads(body)["history"]] == ["anna"]
        assert json.loads(request(srv, "GET", "/api/config")[2])["labels"] == sorted(part_message(1)["probabilities"])
        # shutting down with the event stream still open ends it
        srv.stop()
        reader.join(10)
        assert not reader.is_alive()
    finally:
        srv.stop()
        station.close()


def test_archive_import(tmp_path: Path) -> None:
    from edge.archive import RejectArchive
    from edge.decision import Verdict
    from edge.result import InspectionResult
    from edge.settings import ArchiveSettings

    arch = RejectArchive(ArchiveSettings.model_validate({"path": str(tmp_path / "archive")}))
    labels = ("crack", "free")
    for seq, (passed, label) in enumerate([(False, "crack"), (True, "free"), (False, "crack")], start=1):
        frame = np.full((48, 64, 3), 40 * seq, np.uint8)
        t = time.time()
        arch.handle(InspectionResult(
            seq=seq, part_id=f"AR{seq}", station_id="station-1", trigger_ts=t, decision_ts=t,
            verdict=Verdict(passed, label, 0.9, "" if passed else label),
            probabilities=np.array([0.9, 0.1] if label == "crack" else [0.1, 0.9], np.float32), labels=labels,
            frame=frame))
    assert arch.flush(10)
    arch.close()
    srv = make_server(tmp_path, archive=tmp_path / "archive")
    try:
        st = srv.importer.scan()  # type: ignore[union-attr]
        assert (st.added, st.records, st.missing_frames, st.corrupt_frames) == (2, 2, 0, 0)
        rows, total = srv.store.list_rejects()
        assert total == 2 and [r["part_id"] for r in rows] == ["AR3", "AR1"]
        assert all(r["origin"] == "archive" and r["has_image"] for r in rows)
        assert srv.importer.scan().added == 0  # type: ignore[union-attr]  # idempotent
    finally:
        srv.close()
