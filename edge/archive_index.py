"""SQLite index of the reject archive (one row per archived record; WAL mode).

The writer (:class:`edge.archive.RejectArchive`) is the only process that writes; the review page
opens the same file read-only with :func:`query_archive` to list rejects fast, newest first.
Paths in the index are relative to the archive folder. ``bytes`` is the size of the frame plus the
JSON record, which is what the byte retention adds up (the index file itself is not counted).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INDEX_NAME = "index.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id          INTEGER PRIMARY KEY,
    ts          REAL    NOT NULL,   -- trigger time, UNIX seconds
    seq         INTEGER,
    part_id     TEXT,
    label       TEXT,
    probability REAL,
    verdict     TEXT,               -- 'pass' | 'fail'
    reason      TEXT,
    failsafe    TEXT,               -- NULL | 'TIMEOUT' | 'NO_FRAME' | 'ERROR'
    image_path  TEXT,               -- relative to the archive folder; NULL when no frame
    json_path   TEXT    NOT NULL,
    bytes       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_ts ON records (ts);
CREATE INDEX IF NOT EXISTS records_label_ts ON records (label, ts);
"""

_COLUMNS = (
    "id", "ts", "seq", "part_id", "label", "probability", "verdict", "reason", "failsafe",
    "image_path", "json_path", "bytes",
)


@dataclass(frozen=True)
class ArchiveRecord:
    """One archived record as listed by the index (paths relative to the archive folder)."""

    id: int
    ts: float
    seq: int | None
    part_id: str | None
    label: str | None
    probability: float | None
    verdict: str | None
    reason: str | None
    failsafe: str | None
    image_path: str | None
    json_path: str
    bytes: int


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    if readonly:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    else:
        con = sqlite3.connect(str(path), timeout=5.0, isolation_level=None)
    con.row_factory = sqlite3.Row
    return con


class ArchiveIndex:
    """Read/write access to the index; used by the archive's writer thread only.

    Raises:
        sqlite3.DatabaseError: the file is not an SQLite database or is corrupt (the archive
            then moves it aside and rebuilds it from the JSON records, see ``rebuild``).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._con = _connect(path, readonly=False)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=NORMAL")
        # Keep the WAL small (a nearly full disk must still take the deletes that free it):
        # checkpoint every 64 pages (256 KiB) and truncate the WAL file to 1 MiB after that.
        self._con.execute("PRAGMA wal_autocheckpoint=64")
        self._con.execute("PRAGMA journal_size_limit=1048576")
        self._con.executescript(_SCHEMA)
        self._con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        # A garbage file is only detected on first real read: do it now.
        self._con.execute("SELECT count(*) FROM records").fetchone()

    def close(self) -> None:
        self._con.close()

    def insert(self, row: dict[str, Any]) -> int:
        """Insert one record (keys = the columns except ``id``); returns its id."""
        cols = [c for c in _COLUMNS if c != "id"]
        cur = self._con.execute(
            f"INSERT INTO records ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
            [row.get(c) for c in cols],
        )
        return int(cur.lastrowid or 0)

    def insert_many(self, rows: Iterable[dict[str, Any]]) -> None:
        self._con.execute("BEGIN")
        try:
            for row in rows:
                self.insert(row)
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    def delete(self, ids: Iterable[int]) -> None:
        self._con.executemany("DELETE FROM records WHERE id = ?", [(i,) for i in ids])

    def totals(self) -> tuple[int, int]:
        """(number of records, sum of their bytes)."""
        n, b = self._con.execute("SELECT count(*), coalesce(sum(bytes), 0) FROM records").fetchone()
        return int(n), int(b)

    def oldest(self, limit: int) -> list[ArchiveRecord]:
        rows = self._con.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM records ORDER BY ts, id LIMIT ?", (limit,)
        ).fetchall()
        return [ArchiveRecord(**dict(r)) for r in rows]

    def older_than(self, ts: float, limit: int) -> list[ArchiveRecord]:
        rows = self._con.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM records WHERE ts < ? ORDER BY ts, id LIMIT ?", (ts, limit)
        ).fetchall()
        return [ArchiveRecord(**dict(r)) for r in rows]


def _where(label: str | None, verdict: str | None, since: float | None, until: float | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if label is not None:
        clauses.append("label = ?")
        args.append(label)
    if verdict is not None:
        clauses.append("verdict = ?")
        args.append(verdict)
    if since is not None:
        clauses.append("ts >= ?")
        args.append(since)
    if until is not None:
        clauses.append("ts < ?")
        args.append(until)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def query_archive(
    archive_dir: str | Path,
    *,
    label: str | None = None,
    verdict: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[ArchiveRecord]:
    """List archived records, newest first (read-only; safe while the archive is writing).

    Args:
        archive_dir: the archive folder (``archive.path``).
        label: only this top-1 label (e.g. ``"crack"``).
        verdict: only ``"fail"`` or ``"pass"``.
        since, until: only records with ``since <= ts < until`` (UNIX seconds, trigger time).
            For stable paging while records arrive, pass the ``ts`` of the last row seen as
            ``until`` instead of growing ``offset``.
        limit, offset: page size (1..1000) and rows skipped.

    Returns:
        Up to ``limit`` records; ``[]`` when the archive has no index yet.

    Raises:
        ValueError: ``limit`` outside 1..1000 or negative ``offset``.
        sqlite3.DatabaseError: the index is corrupt.
    """
    if not 1 <= limit <= 1000:
        raise ValueError(f"limit = {limit}: expected 1..1000")
    if offset < 0:
        raise ValueError(f"offset = {offset}: expected >= 0")
    path = Path(archive_dir) / INDEX_NAME
    if not path.is_file():
        return []
    where, args = _where(label, verdict, since, until)
    with closing(_connect(path, readonly=True)) as con:
        rows = con.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM records{where} ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
    return [ArchiveRecord(**dict(r)) for r in rows]


def count_archive(
    archive_dir: str | Path,
    *,
    label: str | None = None,
    verdict: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> int:
    """Number of records matching the same filters as :func:`query_archive` (0 without index)."""
    path = Path(archive_dir) / INDEX_NAME
    if not path.is_file():
        return 0
    where, args = _where(label, verdict, since, until)
    with closing(_connect(path, readonly=True)) as con:
        return int(con.execute(f"SELECT count(*) FROM records{where}", args).fetchone()[0])


def iter_json_records(archive_dir: Path) -> Iterator[Path]:
    """Every ``YYYYMMDD/*.json`` record file under the archive folder, in name (= time) order."""
    for day in sorted(p for p in archive_dir.iterdir() if p.is_dir() and p.name.isdigit()):
        yield from sorted(day.glob("*.json"))
