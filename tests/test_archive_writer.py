"""Reject archive: real files and a real SQLite index on disk (no mocks)."""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.archive import RejectArchive, encode_frame
from edge.archive_index import count_archive, query_archive
from edge.decision import Verdict
from edge.result import InspectionResult, ModelInfo, failsafe_verdict
from edge.settings import ArchiveSettings

T0 = 1_764_470_000.0  # 2025-11-30 02:33:20 UTC
LABELS = ("blowhole", "crack", "free")
MODEL = ModelInfo("model.onnx", "ab" * 32, "fp32", "onnxruntime")


def make_result(seq: int, *, passed: bool = False, label: str = "crack", ts: float | None = None,
                frame: np.ndarray | None = None, failsafe: str | None = None) -> InspectionResult:
    if failsafe:
        verdict = failsafe_verdict(failsafe)
    else:
        verdict = Verdict(passed, label, 0.9, "" if passed else label)
    if frame is None and not failsafe:
        frame = np.zeros((24, 32, 3), np.uint8)
        frame[:, :, 0] = 200  # red in RGB
        frame[4:8, 4:8, 1] = seq % 256
    return InspectionResult(
        seq=seq, part_id=f"P{seq:04d}", station_id="station-1", trigger_ts=T0 + seq if ts is None else ts,
        verdict=verdict, capture_ts=None, decision_ts=None,
        probabilities=np.array([0.05, 0.9, 0.05], np.float32), labels=LABELS,
        latency_ms={"capture": 1.0, "infer": 10.0}, model=MODEL, failsafe=failsafe, frame=frame,
    )


def settings(path: Path, **kw: object) -> ArchiveSettings:
    return ArchiveSettings(path=str(path), **kw)


def archive(path: Path, clock: float = T0 + 86400, start: bool = True, **kw: object) -> RejectArchive:
    """An archive whose wall clock is fixed near T0, so age retention does not depend on today."""
    return RejectArchive(settings(path, **kw), clock=lambda: clock, start=start)


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.glob("2*/*") if p.is_file())


def test_rejects_written_atomically_with_index(tmp_path: Path) -> None:
    arc = archive(tmp_path / "a", image_format="png")
    results = [make_result(1), make_result(2, passed=True, label="free"), make_result(3, label="blowhole")]
    for r in results:
        arc.handle(r)
    assert arc.close(10.0)
    st = arc.stats
    assert (st["accepted"], st["written"], st["records"], st["errors"], st["dropped_queue_full"]) == (2, 2, 2, 0, 0)

    day = tmp_path / "a" / "20251130"
    names = sorted(p.name for p in day.iterdir())
    assert names == [
        "023321.000_00000001_P0001.json", "023321.000_00000001_P0001.png",
        "023323.000_00000003_P0003.json", "023323.000_00000003_P0003.png",
    ]
    assert not list((tmp_path / "a" / ".tmp").iterdir())
    # JSON record = the ZeroMQ message, field for field
    assert json.loads((day / names[0]).read_text()) == results[0].to_message()
    # PNG is lossless: the file holds exactly the frame, RGB stored as BGR by OpenCV
    img = cv2.imread(str(day / names[1]), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(img[:, :, ::-1], results[0].frame)
    assert st["bytes"] == disk_bytes(tmp_path / "a")

    rows = query_archive(tmp_path / "a")
    assert [(r.seq, r.part_id, r.label, r.verdict) for r in rows] == [(3, "P0003", "blowhole", "fail"),
                                                                      (1, "P0001", "crack", "fail")]
    assert rows[1].image_path == "20251130/023321.000_00000001_P0001.png"
    assert rows[1].probability == pytest.approx(0.9)
    assert [r.seq for r in arc.query(label="crack")] == [1]
    assert [r.seq for r in arc.query(since=T0 + 2)] == [3]
    assert [r.seq for r in arc.query(until=T0 + 2)] == [1]
    assert [r.seq for r in arc.query(limit=1, offset=1)] == [1]
    assert arc.count() == 2 and count_archive(tmp_path / "a", label="crack") == 1
    con = sqlite3.connect(tmp_path / "a" / "index.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_jpeg_frame_and_failsafe_without_frame(tmp_path: Path) -> None:
    arc = archive(tmp_path, image_format="jpg", jpeg_quality=90)
    arc.handle(make_result(5))
    arc.handle(make_result(6, failsafe="TIMEOUT"))
    assert arc.close(10.0)
    rows = {r.seq: r for r in arc.query()}
    assert rows[5].image_path.endswith(".jpg") and cv2.imread(str(tmp_path / rows[5].image_path)).shape == (24, 32, 3)
    assert rows[6].image_path is None and rows[6].failsafe == "TIMEOUT" and rows[6].label == "TIMEOUT"
    assert json.loads((tmp_path / rows[6].json_path).read_text())["failsafe"] == "TIMEOUT"


def test_pass_sampling_is_exact(tmp_path: Path) -> None:
    arc = archive(tmp_path, pass_sample_rate=0.25)
    for seq in range(1, 9):
        arc.handle(make_result(seq, passed=True, label="free"))
    arc.handle(make_result(9))
    assert arc.close(10.0)
    assert arc.stats["passes_sampled"] == 2
    assert sorted(r.seq for r in arc.query()) == [4, 8, 9]


def test_queue_bounds_drop_and_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="edgeqc.archive")
    arc = archive(tmp_path, queue_size=3, start=False)  # writer not running yet
    for seq in range(1, 6):
        arc.handle(make_result(seq))
    assert arc.stats["accepted"] == 3 and arc.stats["dropped_queue_full"] == 2 and arc.stats["queued"] == 3
    qmax = ArchiveSettings(path=str(tmp_path)).queue_max_bytes
    assert [r.getMessage() for r in caplog.records if r.name == "edgeqc.archive"] == [  # 2nd drop: rate-limited
        f"archive: queue full (3 items / {qmax} bytes): record dropped (1 so far)"]
    arc.start()
    assert arc.close(10.0)
    assert arc.stats["written"] == 3 and sorted(r.seq for r in arc.query()) == [1, 2, 3]

    frame = np.zeros((100, 100, 3), np.uint8)  # 30000 bytes
    arc2 = archive(tmp_path / "b", queue_max_bytes=50_000, start=False)
    for seq in range(1, 4):
        arc2.handle(make_result(seq, frame=frame))
    assert arc2.stats["accepted"] == 1 and arc2.stats["dropped_queue_full"] == 2
    assert arc2.stats["queued_bytes"] == 30_000
    arc2.close(10.0)


def test_retention_by_bytes_keeps_newest(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(10)]  # PNG ~4.8 kB each
    probe = archive(tmp_path / "probe", image_format="png")
    probe.handle(make_result(1, frame=frames[0]))
    probe.close(10.0)
    one = probe.stats["bytes"]
    limit = 3 * one + one // 2  # room for 3 records
    arc = archive(tmp_path / "a", image_format="png", max_bytes=limit)
    for seq in range(1, 11):
        arc.handle(make_result(seq, frame=frames[seq - 1]))
    assert arc.close(10.0)
    st = arc.stats
    assert st["written"] == 10 and st["deleted_bytes"] == 7 and st["records"] == 3
    assert st["bytes"] == disk_bytes(tmp_path / "a") <= limit
    assert sorted(r.seq for r in arc.query()) == [8, 9, 10]
    assert len(list((tmp_path / "a").glob("2*/*"))) == 6


def test_retention_by_age(tmp_path: Path) -> None:
    now = T0 + 40 * 86400
    ages_days = [35, 31, 29, 1]
    arc = archive(tmp_path, clock=now, max_age_days=30)
    for seq, age in enumerate(ages_days, 1):
        arc.handle(make_result(seq, ts=now - age * 86400))
    arc.run_retention()
    assert arc.flush(10.0)
    st = arc.stats
    assert st["deleted_age"] == 2 and st["records"] == 2
    assert sorted(r.seq for r in arc.query()) == [3, 4]
    # the day folders of deleted records are removed once empty
    assert sorted(p.name for p in tmp_path.iterdir() if p.name[0].isdigit()) == ["20251211", "20260108"]
    arc.close(10.0)


def test_disk_error_never_raises_and_is_counted(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the archive's parent folder should be")
    arc = archive(blocker / "archive")
    for seq in range(1, 4):
        arc.handle(make_result(seq))  # must not raise
    assert arc.close(10.0)
    st = arc.stats
    assert (st["accepted"], st["written"], st["dropped_error"], st["errors_io"]) == (3, 0, 3, 1)
    assert "Not a directory" in st["last_error"] and str(blocker) in st["last_error"]


def test_write_error_after_open_is_counted(tmp_path: Path) -> None:
    arc = archive(tmp_path)
    arc.handle(make_result(1))
    assert arc.flush(10.0)
    # a file where the next day folder must go: the write fails with OSError, the loop goes on
    (tmp_path / "20251201").write_text("blocker")
    arc.handle(make_result(2, ts=T0 + 86400))
    arc.handle(make_result(3))
    assert arc.close(10.0)
    st = arc.stats
    assert (st["written"], st["dropped_error"], st["errors_io"], st["records"]) == (2, 1, 1, 2)
    assert sorted(r.seq for r in arc.query()) == [1, 3]


def test_corrupt_index_is_rebuilt_from_records(tmp_path: Path) -> None:
    arc = archive(tmp_path)
    for seq in (1, 2):
        arc.handle(make_result(seq))
    arc.close(10.0)
    size = arc.stats["bytes"]
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"index.sqlite{suffix}").unlink(missing_ok=True)
    (tmp_path / "index.sqlite").write_bytes(b"this is not an sqlite database" * 100)
    (tmp_path / ".tmp" / "stale.jpg").write_bytes(b"half a write")
    arc2 = archive(tmp_path)
    arc2.handle(make_result(3))
    arc2.close(10.0)
    assert arc2.stats["records"] == 3 and sorted(r.seq for r in arc2.query()) == [1, 2, 3]
    assert arc2.stats["bytes"] == disk_bytes(tmp_path) > size
    assert len(list(tmp_path.glob("index.sqlite.corrupt-*"))) == 1
    assert not (tmp_path / ".tmp" / "stale.jpg").exists()


def test_encode_frame_formats() -> None:
    gray16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    png = encode_frame(gray16, "png")
    back = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back, gray16)
    jpg = encode_frame(gray16, "jpg")
    assert cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    with pytest.raises(ValueError, match=r"frame dtype float32: expected uint8 or uint16"):
        encode_frame(np.zeros((2, 2), np.float32), "png")
    with pytest.raises(ValueError, match=r"frame shape \(2, 2, 2\)"):
        encode_frame(np.zeros((2, 2, 2), np.uint8), "png")


def test_names_sort_by_time(tmp_path: Path) -> None:
    arc = archive(tmp_path)
    for seq, ts in ((1, T0 + 0.5), (2, T0 + 0.25), (3, T0 + 3600)):
        arc.handle(make_result(seq, ts=ts))
    arc.close(10.0)
    names = sorted(p.stem for p in tmp_path.glob("2*/*.json"))
    assert [int(re.match(r"\d{6}\.\d{3}_(\d{8})_", n).group(1)) for n in names] == [2, 1, 3]
    assert os.path.basename(names[0]) == "023320.250_00000002_P0002"
