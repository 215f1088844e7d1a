"""Review store (SQLite on disk) and export-review: persistence, validation, exact export contents."""

from __future__ import annotations

import argparse
import csv
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest
from review_util import jpeg, part_message

from edge.review.export import CSV_COLUMNS, ExportError, csv_cell, export_review
from edge.review.messages import MessageError, check_image, parse_part
from edge.review.store import RejectFilter, ReviewStore, StoreError


def add(store: ReviewStore, seq: int, image: bytes | None = None, **kw: object) -> int:
    msg = parse_part(part_message(seq, ts=1_764_470_000.0 + seq, **kw))  # type: ignore[arg-type]
    rid, change = store.add_reject(msg, image, "jpg" if image else None)
    assert change == "new"
    return rid


def test_verdicts_persist_across_reopen(tmp_path: Path) -> None:
    db = tmp_path / "review.sqlite"
    frame = jpeg(1)
    with ReviewStore(db) as store:
        rid = add(store, 1, frame)
        store.set_verdict(rid, "defect", who="anna", client="127.0.0.1", ts=1_764_470_100.0)
        store.set_verdict(rid, "good", who="ben", ts=1_764_470_200.0)  # changed mind: latest counts
    with ReviewStore(db) as store:
        r = store.get(rid)
        assert r is not None
        assert (r["review"], r["reviewed_by"], r["reviewed_ts"]) == ("good", "ben", 1_764_470_200.0)
        hist = store.verdict_history(rid)
        assert [(h["verdict"], h["who"], h["client"], h["ts"]) for h in hist] == [
            ("defect", "anna", "127.0.0.1", 1_764_470_100.0), ("good", "ben", None, 1_764_470_200.0)]
        assert store.image(rid) == (frame, "jpg")
    # and it is plain SQLite for anyone else
    con = sqlite3.connect(db)
    assert con.execute("SELECT review, reviewed_by FROM rejects WHERE id=?", (rid,)).fetchone() == ("good", "ben")
    con.close()


def test_duplicates_and_late_frame(tmp_path: Path) -> None:
    with ReviewStore(tmp_path / "r.sqlite") as store:
        msg = parse_part(part_message(7))
        rid, change = store.add_reject(msg, None, None)
        assert change == "new" and store.get(rid)["has_image"] is False  # type: ignore[index]
        assert store.add_reject(msg, None, None) == (rid, "none")
        assert store.add_reject(msg, jpeg(7), "jpg") == (rid, "image")
        assert store.add_reject(msg, jpeg(8), "jpg") == (rid, "none")  # first frame stays
        assert store.image(rid) == (jpeg(7), "jpg")
        assert store.count() == 1


def test_verdict_validation(tmp_path: Path) -> None:
    with ReviewStore(tmp_path / "r.sqlite", pass_classes=["free"]) as store:
        crack = add(store, 1, jpeg(1))
        unsure = add(store, 2, jpeg(2), label="free", probability=0.41, reason="uncertain")
        timeout = add(store, 3, None, label="TIMEOUT", probability=0.0, failsafe="TIMEOUT")
        with pytest.raises(StoreError, match="verdict = 'maybe'"):
            store.set_verdict(crack, "maybe")
        with pytest.raises(StoreError, match="reject id 999 not in the store"):
            store.set_verdict(999, "good")
        with pytest.raises(StoreError, match="'scratch': not a model label"):
            store.set_verdict(crack, "defect", "scratch")
        with pytest.raises(StoreError, match="expected a pass class"):
            store.set_verdict(crack, "good", "crack")
        with pytest.raises(StoreError, match="choose the defect class"):
            store.set_verdict(unsure, "defect")
        with pytest.raises(StoreError, match="choose the defect class"):
            store.set_verdict(timeout, "defect")
        with pytest.raises(StoreError, match="who = ''"):
            store.set_verdict(crack, "good", who=" ")
        assert store.set_verdict(unsure, "defect", "blowhole")["true_class"] == "blowhole"
        assert store.set_verdict(timeout, "defect", "break")["review"] == "defect"  # labels known from others
        assert store.verdict_history(crack) == []


def test_history_filters_paging_and_stats(tmp_path: Path) -> None:
    with ReviewStore(tmp_path / "r.sqlite") as store:
        ids = [add(store, i, jpeg(i), label=("crack" if i % 2 else "fray")) for i in range(1, 8)]  # 4 crack, 3 fray
        rows, total = store.list_rejects(limit=3)
        assert total == 7 and [r["seq"] for r in rows] == [7, 6, 5]  # newest first
        rows, _ = store.list_rejects(limit=3, offset=3)
        assert [r["seq"] for r in rows] == [4, 3, 2]
        rows, total = store.list_rejects(RejectFilter(label="fray"))
        assert total == 3 and {r["label"] for r in rows} == {"fray"}
        store.set_verdict(ids[0], "good")
        store.set_verdict(ids[2], "defect")
        store.set_verdict(ids[1], "defect")
        _, total = store.list_rejects(RejectFilter(reviewed=False))
        assert total == 4
        rows, total = store.list_rejects(RejectFilter(reviewed=True, label="crack"))
        assert total == 2 and [r["seq"] for r in rows] == [3, 1]
        rows, total = store.list_rejects(RejectFilter(since=1_764_470_003.0, until=1_764_470_005.0))
        assert [r["seq"] for r in rows] == [4, 3]
        s = store.stats()
        assert (s["rejects"], s["reviewed"], s["good"], s["defect"]) == (7, 3, 1, 2)
        assert s["false_reject_rate"] == pytest.approx(1 / 3)
        assert s["by_class"]["crack"] == {"rejects": 4, "reviewed": 2, "good": 1, "defect": 1}
        assert s["by_class"]["fray"] == {"rejects": 3, "reviewed": 1, "good": 0, "defect": 1}
        assert store.stats(since=1_764_470_010.0)["false_reject_rate"] is None
        # retention drops unreviewed only
        assert store.prune(older_than=1_764_470_100.0) == 4
        assert store.count() == 3
        assert store.labels() == ["blowhole", "break", "crack", "fray", "free", "uneven"]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_export_writes_class_folders_and_csv(tmp_path: Path) -> None:
    frames = {i: jpeg(i) for i in range(1, 8)}
    with ReviewStore(tmp_path / "r.sqlite", pass_classes=["free"]) as store:
        r1 = add(store, 1, frames[1], label="crack")                   # confirmed crack
        r2 = add(store, 2, frames[2], label="crack")                   # false reject -> free
        r3 = add(store, 3, frames[3], label="crack")                   # confirmed, corrected to break
        r4 = add(store, 4, frames[4], label="free", probability=0.4, reason="uncertain")  # defect: blowhole
        r5 = add(store, 5, frames[5], label="fray")                    # false reject -> free
        add(store, 6, frames[6], label="fray")                         # unreviewed: not exported
        r7 = add(store, 7, None, label="uneven")                       # reviewed, no frame: CSV only
        store.set_verdict(r1, "defect", who="anna")
        store.set_verdict(r2, "good", who="anna")
        store.set_verdict(r3, "defect", "break", who="ben")
        store.set_verdict(r4, "defect", "blowhole", who="ben")
        store.set_verdict(r5, "good", who="ben")
        store.set_verdict(r7, "defect", who="ben")
        out = tmp_path / "export"
        summary = export_review(store, out, pass_class="free")

    assert summary.images == {"crack": 1, "free": 2, "break": 1, "blowhole": 1}
    assert (summary.rows, summary.missing_image, summary.total_images) == (6, 1, 5)
    assert sorted(p.name for p in out.iterdir()) == ["blowhole", "break", "crack", "free", "verdicts.csv"]
    files = {d.name: sorted(f.name for f in d.iterdir()) for d in out.iterdir() if d.is_dir()}
    assert {k: len(v) for k, v in files.items()} == {"crack": 1, "free": 2, "break": 1, "blowhole": 1}

    rows = _read_csv(out / "verdicts.csv")
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert len(rows) == 6
    by_seq = {int(r["seq"]): r for r in rows}
    assert {s: (r["class"], r["verdict"], r["predicted_label"]) for s, r in by_seq.items()} == {
        1: ("crack", "defect", "crack"), 2: ("free", "good", "crack"), 3: ("break", "defect", "crack"),
        4: ("blowhole", "defect", "free"), 5: ("free", "good", "fray"), 7: ("uneven", "defect", "uneven"),
    }
    assert by_seq[7]["file"] == ""
    assert by_seq[2]["reviewed_by"] == "anna" and by_seq[2]["reviewed_at_utc"].endswith("Z")
    # each file is the exact frame received and decodes
    for seq in (1, 2, 3, 4, 5):
        f = out / by_seq[seq]["file"]
        assert f.read_bytes() == frames[seq]
        img = cv2.imread(str(f))
        assert img is not None and img.shape == (96, 128, 3)
    # false rejects land under the pass class
    assert {by_seq[2]["file"].split("/")[0], by_seq[5]["file"].split("/")[0]} == {"free"}


def test_export_pass_class_flag_and_refuses_dirty_folder(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    with ReviewStore(db, pass_classes=["free", "ok"]) as store:
        store.set_verdict(add(store, 1, jpeg(1)), "good", who="anna")
        dirty = tmp_path / "dirty"
        dirty.mkdir()
        (dirty / "old.txt").write_text("x")
        with pytest.raises(ExportError, match="not empty"):
            export_review(store, dirty, "free")
    # through the CLI handler, with --pass-class
    from edge.review.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    out = tmp_path / "out"
    args = parser.parse_args(["export-review", str(out), "--db", str(db), "--pass-class", "fray"])
    assert args.func(args) == 0
    assert [p.relative_to(out).parts[0] for p in out.rglob("*.jpg")] == ["fray"]
    assert _read_csv(out / "verdicts.csv")[0]["class"] == "fray"


def test_export_refuses_unknown_pass_class_file_and_unwritable_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge.cli import main

    db = tmp_path / "r.sqlite"
    with ReviewStore(db, pass_classes=["free", "ok"]) as store:
        store.set_verdict(add(store, 1, jpeg(1)), "good", who="anna")
    base = ["--db", str(db)]
    # a pass class the model never produced (here "ok" from the config, "good" from the flag)
    assert main(["export-review", str(tmp_path / "a"), *base, "--pass-class", "good"]) == 2
    assert capsys.readouterr().err == ("edgeqc: pass class = 'good': not a model label seen in the review store; "
                                       "expected one of blowhole, break, crack, fray, free, uneven\n")
    assert main(["export-review", str(tmp_path / "a"), *base, "--pass-class", "ok"]) == 2
    assert "pass class = 'ok': not a model label" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    # a file, not a folder
    f = tmp_path / "station.toml"
    f.write_text("")
    assert main(["export-review", str(f), *base]) == 2
    assert capsys.readouterr().err == (f"edgeqc: export folder {str(f)!r} is a file, not a folder: choose a new or "
                                       "empty folder\n")
    # a folder that cannot be created: clear message, exit 1, no traceback
    assert main(["export-review", "/proc/exp", *base]) == 1
    assert capsys.readouterr().err == ("edgeqc export-review: cannot write the export folder '/proc/exp': No such "
                                       "file or directory: choose a writable new or empty folder\n")


def test_export_without_labels_in_store_takes_any_pass_class(tmp_path: Path) -> None:
    with ReviewStore(tmp_path / "r.sqlite") as store:
        store.set_verdict(add(store, 1, jpeg(1), label="strange"), "good", who="anna")  # no probabilities
        assert store.labels() == []
        summary = export_review(store, tmp_path / "out", "good")
    assert summary.images == {"good": 1}


def test_export_neutralises_csv_formulas(tmp_path: Path) -> None:
    with ReviewStore(tmp_path / "r.sqlite", pass_classes=["free"]) as store:
        for seq, who in enumerate(["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "anna", "a=b"], start=1):
            store.set_verdict(add(store, seq, None, part_id=f"-P{seq}"), "defect", who=who)
        export_review(store, tmp_path / "out", "free")
    rows = _read_csv(tmp_path / "out" / "verdicts.csv")
    assert [r["reviewed_by"] for r in rows] == ["'=cmd|' /C calc'!A0", "'+1+1", "'-2+3", "'@SUM(A1)", "anna", "a=b"]
    assert [r["part_id"] for r in rows] == [f"'-P{i}" for i in range(1, 7)]
    assert {r["predicted_label"] for r in rows} == {"crack"} and rows[0]["probability"] == "0.900000"
    # the store strips the operator name; TAB / CR starts are neutralised too
    assert [csv_cell(v) for v in ("\tx", "\r=x", "x\t", 7, None)] == ["'\tx", "'\r=x", "x\t", 7, None]


def test_message_and_image_checks() -> None:
    good = jpeg(3)
    assert check_image(good) == "jpg"
    assert check_image(good[: len(good) // 2]) is None  # truncated
    assert check_image(b"") is None and check_image(b"GIF89a....") is None
    _, png = cv2.imencode(".png", np.zeros((4, 4), np.uint8))
    assert check_image(png.tobytes()) == "png"
    msg = part_message(1)
    msg["decision_ts"] = None  # fail-safe answers may lack it: filed under the capture time
    assert parse_part(msg).ts == msg["capture_ts"]
    for field, value, expect in (
        ("schema", 2, "field 'schema' = 2: expected 1"),
        ("seq", "7", "field 'seq' = '7': expected int"),
        ("verdict", "maybe", "expected 'pass' or 'fail'"),
        ("probability", None, "field 'probability' missing"),
    ):
        bad = dict(part_message(1), **{field: value})
        with pytest.raises(MessageError, match=expect):
            parse_part(bad)
    with pytest.raises(MessageError, match="not JSON"):
        parse_part(b"{nope")


def test_store_refuses_foreign_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite file"):
        ReviewStore(bad)
