"""Review feed over real ZeroMQ on loopback: rejects filed, station restart picked up, seq gaps,
missing/corrupt frames and bad messages counted; station state bookkeeping."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from review_util import FakeStation, jpeg, part_message, wait_for

from edge.review.live import StationFeed
from edge.review.messages import PartMessage
from edge.review.stations import StationState
from edge.review.store import ReviewStore


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    c: zmq.Context[Any] = zmq.Context()
    yield c
    c.term()


class Filed:
    """Feed callback: files into a real store and remembers what came."""

    def __init__(self, store: ReviewStore) -> None:
        self.store = store
        self.seen: list[tuple[int, str, bool]] = []

    def __call__(self, msg: PartMessage, image: bytes | None, fmt: str | None, st: StationState) -> None:
        self.store.add_reject(msg, image, fmt)
        self.seen.append((msg.seq, msg.part_id, image is not None))


def subscribed(station: FakeStation, feed: StationFeed, statuses: int = 1) -> None:
    """Publish status messages until the feed has received ``statuses`` of them (slow joiner)."""
    st = feed.states[station.endpoint]
    wait_for(lambda: st.counters["statuses"] >= statuses, what="subscription", tick=station.status)


def test_rejects_gaps_and_station_restart(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    station = FakeStation(ctx)
    ep = station.endpoint
    store = ReviewStore(tmp_path / "r.sqlite")
    filed = Filed(store)
    feed = StationFeed([ep], on_reject=filed, reconnect_ivl_ms=100, reconnect_ivl_max_ms=200).start()
    try:
        subscribed(station, feed)
        st = feed.states[ep]
        wait_for(lambda: st.connected, what="link up")
        frame = jpeg(1)
        station.result(part_message(1, verdict="pass", label="free"))
        station.reject(part_message(2, part_id="A2"), frame)
        station.result(part_message(3, verdict="pass", label="free"))
        station.result(part_message(6, verdict="pass", label="free"))   # 4 and 5 lost: gap of 2
        station.reject(part_message(7, part_id="A7"), jpeg(7))
        wait_for(lambda: len(filed.seen) == 2, what="two rejects")
        assert filed.seen == [(2, "A2", True), (7, "A7", True)]
        assert (st.counters["seq_gaps"], st.counters["restarts"]) == (2, 0)
        assert (st.counters["results"], st.counters["rejects"]) == (5, 2)
        rows, total = store.list_rejects()
        assert total == 2 and rows[1]["part_id"] == "A2"
        assert store.image(rows[1]["id"]) == (frame, "jpg")

        # the station restarts on the same endpoint: its seq begins again at 1
        station.close()
        wait_for(lambda: not st.connected, what="link down")
        station = FakeStation(ctx, ep)
        subscribed(station, feed, statuses=st.counters["statuses"] + 1)
        station.result(part_message(1, verdict="pass", label="free"))
        station.reject(part_message(2, part_id="B2"), jpeg(22))
        wait_for(lambda: len(filed.seen) == 3, what="reject after restart")
        assert filed.seen[2] == (2, "B2", True)
        assert (st.counters["restarts"], st.counters["seq_gaps"]) == (1, 2)
        assert st.connects == 2 and st.disconnects == 1
        assert store.count() == 3
    finally:
        feed.stop()
        station.close()
        store.close()


def test_missing_and_corrupt_frames_and_bad_messages(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    station = FakeStation(ctx)
    store = ReviewStore(tmp_path / "r.sqlite")
    filed = Filed(store)
    feed = StationFeed([station.endpoint], on_reject=filed, frame_wait_s=0.2).start()
    try:
        subscribed(station, feed)
        st = feed.states[station.endpoint]
        station.result(part_message(1, part_id="LOST"))          # fail whose frame message never comes
        good = jpeg(2)
        station.reject(part_message(2, part_id="CUT"), good[: len(good) // 2])  # truncated JPEG
        station.reject(part_message(3, part_id="NOFRAME", label="NO_FRAME", probability=0.0,
                                    failsafe="NO_FRAME"), b"")  # fail-safe without a frame
        station.sock.send_multipart([b"reject", b"{not json", good])
        station.sock.send_multipart([b"result", json.dumps(dict(part_message(4), schema=2)).encode()])
        station.sock.send_multipart([b"status", b"[]"])
        wait_for(lambda: len(filed.seen) == 3, what="three rejects")
        assert sorted(filed.seen) == [(1, "LOST", False), (2, "CUT", False), (3, "NOFRAME", False)]
        assert (st.counters["missing_frames"], st.counters["corrupt_images"], st.counters["bad_messages"]) == (1, 1, 3)
        assert st.last_error == "b'status': expected a JSON object, got list"  # the last bad one
        assert store.count() == 3
    finally:
        feed.stop()
        station.close()
        store.close()


def test_several_stations(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    a, b = FakeStation(ctx), FakeStation(ctx)
    store = ReviewStore(tmp_path / "r.sqlite")
    filed = Filed(store)
    feed = StationFeed([a.endpoint, b.endpoint], on_reject=filed).start()
    try:
        subscribed(a, feed)
        subscribed(b, feed)
        a.reject(part_message(1, station_id="line3-a", part_id="A1"), jpeg(1))
        b.reject(part_message(1, station_id="line3-b", part_id="B1"), jpeg(2))
        wait_for(lambda: len(filed.seen) == 2, what="one reject per station")
        health = {h["endpoint"]: h for h in feed.health()}
        assert health[a.endpoint]["station_id"] == "line3-a" and health[b.endpoint]["station_id"] == "line3-b"
        assert health[a.endpoint]["status"]["parts_per_min"] == 42.0
        assert {r["station_id"] for r in store.list_rejects()[0]} == {"line3-a", "line3-b"}
    finally:
        feed.stop()
        a.close()
        b.close()
        store.close()


def test_station_state_seq_rules() -> None:
    st = StationState("tcp://x:1")
    assert [st.observe_seq("s", n) for n in (5, 5, 6, 9, 8, 2)] == ["first", "companion", "ok", "gap", "companion", "restart"]
    assert (st.counters["seq_gaps"], st.counters["restarts"]) == (3, 1)  # 7, 8 and (after restart) 1
    st.link_up()
    st.link_down()
    assert st.observe_seq("s", 2) == "restart"  # same seq after the link came back: a restart
    assert st.observe_seq("s", 3) == "ok"
    assert (st.counters["seq_gaps"], st.counters["restarts"]) == (4, 2)


def test_bad_endpoint_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="endpoint 'tcp://nohost' cannot be connected"):
        StationFeed(["tcp://nohost"], on_reject=lambda *a: None).start()
