"""ZeroMQ publisher against a real SUB socket on loopback."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import zmq

from edge.decision import Verdict
from edge.publish import Publisher
from edge.result import InspectionResult, ModelInfo
from edge.settings import ZmqSettings

LABELS = ("free", "crack")


def _result(seq: int, passed: bool) -> InspectionResult:
    frame = np.zeros((32, 48, 3), np.uint8)
    frame[:, :, 0] = 200  # red in RGB
    return InspectionResult(
        seq=seq, part_id=f"A{seq}", station_id="line3", trigger_ts=1.0,
        verdict=Verdict(passed, "free" if passed else "crack", 0.9, "" if passed else "crack"),
        probabilities=np.array([0.9, 0.1] if passed else [0.1, 0.9], np.float32), labels=LABELS,
        latency_ms={"total": 3.0}, source_id=f"img{seq}.png", model=ModelInfo("m.onnx", "ab", "fp32", "onnxruntime"),
        frame=frame,
    )


def test_sub_receives_every_result_and_reject_jpeg() -> None:
    ctx = zmq.Context()
    pub = Publisher(ZmqSettings(endpoint="tcp://127.0.0.1:0"), context=ctx)
    sub = ctx.socket(zmq.SUB)
    sub.connect(pub.endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    time.sleep(0.3)  # slow-joiner: let the subscription reach the PUB
    for i in range(1, 11):
        pub.handle(_result(i, passed=i % 3 != 0))
    got: dict[bytes, list[list[bytes]]] = {b"result": [], b"reject": []}
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    while len(got[b"result"]) < 10 or len(got[b"reject"]) < 3:
        assert poller.poll(2000), f"timed out: {[(k, len(v)) for k, v in got.items()]}"
        parts = sub.recv_multipart()
        got[parts[0]].append(parts)
    seqs = [json.loads(p[1])["seq"] for p in got[b"result"]]
    assert seqs == list(range(1, 11))
    rej = [json.loads(p[1]) for p in got[b"reject"]]
    assert [m["part_id"] for m in rej] == ["A3", "A6", "A9"]
    assert rej[0]["verdict"] == "fail" and rej[0]["probabilities"] == {"free": 0.1, "crack": 0.9}
    img = cv2.imdecode(np.frombuffer(got[b"reject"][0][2], np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (32, 48, 3)
    b, g, r = (int(x) for x in img[16, 24])
    assert r > 180 and b < 30  # RGB frame encoded in BGR order: still red
    assert pub.stats == {"sent": 13, "dropped": 0, "encode_errors": 0}
    pub.close()
    sub.close(0)
    ctx.term()


def test_slow_subscriber_costs_counted_drops_never_blocks() -> None:
    ctx = zmq.Context()
    pub = Publisher(ZmqSettings(endpoint="tcp://127.0.0.1:0", send_hwm=5), context=ctx)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 5)
    sub.connect(pub.endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    time.sleep(0.3)
    for i in range(5000):  # nobody reads: queues fill, sends must not block
        pub.handle(_result(i, passed=True))
    assert pub.stats["dropped"] > 0
    assert pub.stats["sent"] + pub.stats["dropped"] == 5000
    pub.close(0)
    sub.close(0)
    ctx.term()


def test_reject_frame_encoded_once_for_stream_and_archive(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Same format and quality (the defaults): the archive stores the very JPEG the 'reject' topic
    carried, and OpenCV encoded each reject once; another quality encodes again in the writer."""
    import edge.archive as archive_mod
    from edge.archive import RejectArchive
    from edge.settings import ArchiveSettings, Settings

    calls: list[int] = []
    real = archive_mod.encode_frame

    def counting(frame, image_format, jpeg_quality=95):  # type: ignore[no-untyped-def]
        calls.append(jpeg_quality)
        return real(frame, image_format, jpeg_quality)

    monkeypatch.setattr(archive_mod, "encode_frame", counting)
    defaults = Settings()
    assert defaults.zmq.jpeg_quality == defaults.archive.jpeg_quality  # shared by default
    ctx = zmq.Context()
    pub = Publisher(ZmqSettings(endpoint="tcp://127.0.0.1:0"), context=ctx)
    sub = ctx.socket(zmq.SUB)
    sub.connect(pub.endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"reject")
    time.sleep(0.3)
    same = RejectArchive(ArchiveSettings(path=str(tmp_path / "same")))
    other = RejectArchive(ArchiveSettings(path=str(tmp_path / "other"), jpeg_quality=60))
    results = [_result(i, passed=False) for i in (1, 2)]
    for r in results:
        r.trigger_ts = time.time()  # within the archive's retention age
    for r in results:
        pub.handle(r)
        same.handle(r)
        other.handle(r)
    assert same.flush(10) and other.flush(10)
    streamed = []
    for _ in results:
        assert sub.poll(2000)
        streamed.append(sub.recv_multipart()[2])
    stored = [(tmp_path / "same" / rec.image_path).read_bytes() for rec in sorted(same.query(), key=lambda r: r.seq)]
    assert stored == streamed and stored[0] != b""
    assert sorted(calls) == [60, 60, 95, 95]  # per reject: the publisher's 95 (kept), the other archive's 60
    for a in (same, other):
        a.close()
    pub.close()
    sub.close(0)
    ctx.term()
