"""The review store: rejects received, their frames, and operator verdicts, in one SQLite file.

Design choices (and why):

* One file. Reject frames are kept **in the database** (table ``images``, JPEG/PNG bytes as
  received), not in a folder beside it: a verdict and its image are written in one transaction,
  can never drift apart, and backing up or moving the review data is copying one file. Frames of
  a reject stream are small (tens to a few hundred kB); SQLite reads and writes BLOBs of that
  size about as fast as the file system ("35% Faster Than The Filesystem",
  https://www.sqlite.org/fasterthanfs.html). Listing queries never touch ``images``.
* WAL journal with ``synchronous=FULL``: a verdict that the page has shown as saved survives a
  power cut (https://www.sqlite.org/pragma.html#pragma_synchronous).
* Verdicts are append-only (table ``verdicts``: who, when, from which client); the latest one
  per reject is also copied onto the ``rejects`` row so filtering by reviewed/unreviewed stays a
  plain indexed query.
* A reject is identified by ``(station_id, seq, trigger_ts)``: ``seq`` restarts with the station,
  the trigger time makes the key unique across restarts. Re-importing the same reject (archive
  import, a republished message) is a no-op.

The store is thread-safe (one connection behind a lock): the ZeroMQ thread inserts while the
web handlers read and write verdicts.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.review.messages import PartMessage

if TYPE_CHECKING:
    from typing_extensions import Self

SCHEMA_VERSION = 1
VERDICTS = ("defect", "good")
CLASS_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rejects (
    id           INTEGER PRIMARY KEY,
    station_id   TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    trigger_ts   REAL NOT NULL,
    ts           REAL NOT NULL,           -- decision time (else capture/trigger), UNIX s
    received_ts  REAL NOT NULL,           -- when the review server got it, UNIX s
    part_id      TEXT NOT NULL,
    label        TEXT NOT NULL,           -- predicted top-1 class
    probability  REAL NOT NULL,
    reason       TEXT NOT NULL,           -- defect class, 'uncertain', or fail-safe cause
    failsafe     TEXT,
    source_id    TEXT,
    origin       TEXT NOT NULL,           -- 'zmq' | 'archive'
    image_format TEXT,                    -- 'jpg' | 'png' | NULL (no frame received)
    message      TEXT NOT NULL,           -- the schema-v1 JSON, verbatim
    review       TEXT CHECK (review IN ('defect', 'good')),  -- latest verdict, NULL = unreviewed
    true_class   TEXT,                    -- class the operator chose with it (NULL = none chosen)
    reviewed_by  TEXT,
    reviewed_ts  REAL,
    UNIQUE (station_id, seq, trigger_ts)
);
CREATE INDEX IF NOT EXISTS rejects_ts ON rejects (ts DESC, id DESC);
CREATE INDEX IF NOT EXISTS rejects_label_ts ON rejects (label, ts DESC);
CREATE INDEX IF NOT EXISTS rejects_review_ts ON rejects (review, ts DESC);
CREATE TABLE IF NOT EXISTS images (
    reject_id INTEGER PRIMARY KEY REFERENCES rejects (id) ON DELETE CASCADE,
    data      BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS verdicts (
    id         INTEGER PRIMARY KEY,
    reject_id  INTEGER NOT NULL REFERENCES rejects (id) ON DELETE CASCADE,
    verdict    TEXT NOT NULL CHECK (verdict IN ('defect', 'good')),
    true_class TEXT,
    who        TEXT NOT NULL,
    client     TEXT,
    ts         REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS verdicts_reject ON verdicts (reject_id);
CREATE TABLE IF NOT EXISTS labels (name TEXT PRIMARY KEY);
"""

_ROW_COLS = (
    "id, station_id, seq, trigger_ts, ts, received_ts, part_id, label, probability, reason, failsafe, "
    "source_id, origin, image_format, message, review, true_class, reviewed_by, reviewed_ts"
)


class StoreError(ValueError):
    """Bad request to the store (unknown reject, verdict or class); the text says which and why."""


@dataclass(frozen=True)
class RejectFilter:
    """History filter. ``since``/``until``: UNIX s (inclusive/exclusive) on the reject's time;
    ``reviewed``: True = only with a verdict, False = only without, None = both."""

    label: str | None = None
    since: float | None = None
    until: float | None = None
    reviewed: bool | None = None
    station_id: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        parts: list[str] = []
        args: list[Any] = []
        if self.label:
            parts.append("label = ?")
            args.append(self.label)
        if self.since is not None:
            parts.append("ts >= ?")
            args.append(self.since)
        if self.until is not None:
            parts.append("ts < ?")
            args.append(self.until)
        if self.reviewed is True:
            parts.append("review IS NOT NULL")
        elif self.reviewed is False:
            parts.append("review IS NULL")
        if self.station_id:
            parts.append("station_id = ?")
            args.append(self.station_id)
        return (" WHERE " + " AND ".join(parts)) if parts else "", args


def _row_dict(r: sqlite3.Row) -> dict[str, Any]:
    msg = json.loads(r["message"])
    probs = msg.get("probabilities") or {}
    top = sorted(probs.items(), key=lambda kv: -kv[1])[:3]
    d = {k: r[k] for k in r.keys() if k != "message"}  # noqa: SIM118 - sqlite3.Row iterates values
    d["has_image"] = r["image_format"] is not None
    d["probabilities"] = probs
    d["top"] = [[k, v] for k, v in top]
    d["model"] = msg.get("model")
    return d


class ReviewStore:
    """SQLite store of rejects and verdicts.

    Args:
        path: the SQLite file (created with its folder if missing).
        pass_classes: labels that mean "good part" (``decision.pass_classes``); a *confirm defect*
            verdict may not name one, a *part is good* verdict may only name one.

    Raises:
        StoreError: ``path`` is not a review store of a known schema version.
    """

    def __init__(self, path: str | Path, pass_classes: Sequence[str] = ("free",)) -> None:
        self.path = Path(path)
        self.pass_classes = tuple(pass_classes)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10.0)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"review.db_path = {str(self.path)!r}: not a usable SQLite file ({exc})") from None
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif row[0] != str(SCHEMA_VERSION):
            self._db.close()
            raise StoreError(
                f"review.db_path = {str(self.path)!r}: store schema version {row[0]}, this edgeqc reads {SCHEMA_VERSION}"
            )

    # ------------------------------------------------------------------ writing
    def add_reject(
        self,
        msg: PartMessage,
        image: bytes | None,
        image_format: str | None,
        origin: str = "zmq",
        received_ts: float | None = None,
    ) -> tuple[int, str]:
        """File one reject (with its frame, if any).

        ``image``/``image_format``: the checked frame bytes and ``"jpg"``/``"png"``, or None/None.
        Returns ``(reject_id, change)``: ``"new"``; ``"image"`` = filed earlier without a frame,
        which this copy supplied; ``"none"`` = already filed.
        """
        now = time.time() if received_ts is None else received_ts
        body = json.dumps(msg.raw, separators=(",", ":"))
        fmt = image_format if image else None
        with self._lock, self._tx():
            cur = self._db.execute(
                "INSERT OR IGNORE INTO rejects (station_id, seq, trigger_ts, ts, received_ts, part_id, label, "
                "probability, reason, failsafe, source_id, origin, image_format, message) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (msg.station_id, msg.seq, msg.trigger_ts, msg.ts, now, msg.part_id, msg.label, msg.probability,
                 msg.reason, msg.failsafe, msg.source_id, origin, fmt, body),
            )
            if cur.rowcount == 1:
                rid = int(cur.lastrowid or 0)
                if image:
                    self._db.execute("INSERT INTO images VALUES (?, ?)", (rid, image))
                if msg.probabilities:
                    self._db.executemany("INSERT OR IGNORE INTO labels VALUES (?)", [(k,) for k in msg.probabilities])
                return rid, "new"
            row = self._db.execute(
                "SELECT id, image_format FROM rejects WHERE station_id=? AND seq=? AND trigger_ts=?",
                (msg.station_id, msg.seq, msg.trigger_ts),
            ).fetchone()
            rid = int(row[0])
            if image and row[1] is None:
                self._db.execute("INSERT OR REPLACE INTO images VALUES (?, ?)", (rid, image))
                self._db.execute("UPDATE rejects SET image_format=? WHERE id=?", (fmt, rid))
                return rid, "image"
            return rid, "none"

    def set_verdict(
        self,
        reject_id: int,
        verdict: str,
        true_class: str | None = None,
        who: str = "operator",
        client: str | None = None,
        ts: float | None = None,
    ) -> dict[str, Any]:
        """Record an operator verdict; the latest one counts. Returns the updated reject.

        Args:
            verdict: ``"defect"`` (confirm defect) or ``"good"`` (part is good = false reject).
            true_class: optional correct class. For ``defect`` it must be a defect class; when the
                predicted label is a pass class (an ``uncertain`` reject) or not a model label (a
                fail-safe answer) it is required. For ``good`` it must be a pass class.
            who: operator name (1-64 characters). client: e.g. the browser's address.

        Raises:
            StoreError: unknown reject id, verdict, or a class that does not fit (message says why).
        """
        if verdict not in VERDICTS:
            raise StoreError(f"verdict = {verdict!r}: expected one of {VERDICTS}")
        who = (who or "").strip()
        if not 1 <= len(who) <= 64:
            raise StoreError(f"who = {who!r}: expected an operator name of 1-64 characters")
        with self._lock:
            r = self._db.execute(f"SELECT {_ROW_COLS} FROM rejects WHERE id=?", (reject_id,)).fetchone()
            if r is None:
                raise StoreError(f"reject id {reject_id} not in the store")
            known = self._labels_for(r)
            if true_class is not None:
                if not CLASS_NAME.match(true_class):
                    raise StoreError(f"true_class = {true_class!r}: expected 1-64 characters [A-Za-z0-9_.-]")
                if known and true_class not in known:
                    raise StoreError(f"true_class = {true_class!r}: not a model label (labels: {sorted(known)})")
            if verdict == "good":
                if true_class is not None and true_class not in self.pass_classes:
                    raise StoreError(
                        f"true_class = {true_class!r} with verdict 'good': expected a pass class {list(self.pass_classes)}"
                    )
            else:
                cls = true_class or r["label"]
                if cls in self.pass_classes:
                    raise StoreError(
                        f"verdict 'defect' for reject {reject_id}: the class {cls!r} is a pass class; choose the defect class"
                    )
                if known and cls not in known:
                    raise StoreError(
                        f"verdict 'defect' for reject {reject_id}: predicted {cls!r} is not a model label; choose the defect class"
                    )
            now = time.time() if ts is None else ts
            with self._tx():
                self._db.execute(
                    "INSERT INTO verdicts (reject_id, verdict, true_class, who, client, ts) VALUES (?,?,?,?,?,?)",
                    (reject_id, verdict, true_class, who, client, now),
                )
                self._db.execute(
                    "UPDATE rejects SET review=?, true_class=?, reviewed_by=?, reviewed_ts=? WHERE id=?",
                    (verdict, true_class, who, now, reject_id),
                )
            out = self.get(reject_id)
            assert out is not None
            return out

    def prune(self, older_than: float) -> int:
        """Delete *unreviewed* rejects (and frames) filed before ``older_than`` (UNIX s); reviewed ones
        are training data and stay. Returns the number deleted."""
        with self._lock, self._tx():
            cur = self._db.execute("DELETE FROM rejects WHERE review IS NULL AND ts < ?", (older_than,))
            return cur.rowcount

    # ------------------------------------------------------------------ reading
    def get(self, reject_id: int) -> dict[str, Any] | None:
        """One reject as a dict (the API's shape), or None."""
        with self._lock:
            r = self._db.execute(f"SELECT {_ROW_COLS} FROM rejects WHERE id=?", (reject_id,)).fetchone()
        return _row_dict(r) if r is not None else None

    def image(self, reject_id: int) -> tuple[bytes, str] | None:
        """``(bytes, "jpg"|"png")`` of a reject's frame, or None."""
        with self._lock:
            r = self._db.execute(
                "SELECT i.data, r.image_format FROM images i JOIN rejects r ON r.id = i.reject_id WHERE i.reject_id=?",
                (reject_id,),
            ).fetchone()
        return (bytes(r[0]), r[1]) if r is not None else None

    def list_rejects(self, flt: RejectFilter | None = None, limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """A page of rejects, newest first, and the total number matching the filter."""
        where, args = (flt or RejectFilter()).where()
        with self._lock:
            total = self._db.execute(f"SELECT count(*) FROM rejects{where}", args).fetchone()[0]
            rows = self._db.execute(
                f"SELECT {_ROW_COLS} FROM rejects{where} ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?",
                [*args, int(limit), int(offset)],
            ).fetchall()
        return [_row_dict(r) for r in rows], int(total)

    def verdict_history(self, reject_id: int) -> list[dict[str, Any]]:
        """Every verdict given for a reject, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT verdict, true_class, who, client, ts FROM verdicts WHERE reject_id=? ORDER BY id", (reject_id,)
            ).fetchall()
        return [dict(r) for r in rows]

    def stats(self, since: float | None = None, until: float | None = None) -> dict[str, Any]:
        """Counts for a time window (e.g. the shift).

        Returns ``{"rejects", "reviewed", "good", "defect", "false_reject_rate", "by_class":
        {label: {"rejects", "reviewed", "good", "defect"}}}``. ``false_reject_rate`` = good /
        reviewed (fraction of reviewed rejects the operator found good), None before any verdict.
        """
        where, args = RejectFilter(since=since, until=until).where()
        with self._lock:
            rows = self._db.execute(
                "SELECT label, count(*), sum(review IS NOT NULL), sum(review = 'good'), sum(review = 'defect') "
                f"FROM rejects{where} GROUP BY label ORDER BY count(*) DESC, label",
                args,
            ).fetchall()
        by_class = {
            r[0]: {"rejects": r[1], "reviewed": r[2] or 0, "good": r[3] or 0, "defect": r[4] or 0} for r in rows
        }
        tot = {k: sum(c[k] for c in by_class.values()) for k in ("rejects", "reviewed", "good", "defect")}
        frr = tot["good"] / tot["reviewed"] if tot["reviewed"] else None
        return {**tot, "false_reject_rate": frr, "by_class": by_class}

    def labels(self) -> list[str]:
        """Every model label seen in a reject's probabilities, sorted."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT name FROM labels ORDER BY name")]

    def reviewed(self) -> Iterator[dict[str, Any]]:
        """Every reviewed reject, oldest first (for the export)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_ROW_COLS} FROM rejects WHERE review IS NOT NULL ORDER BY ts, id"
            ).fetchall()
        for r in rows:
            yield _row_dict(r)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM rejects").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _labels_for(self, r: sqlite3.Row) -> set[str]:
        probs = json.loads(r["message"]).get("probabilities") or {}
        if probs:
            return set(probs)
        return set(self.labels())

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
