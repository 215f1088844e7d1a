"""Import rejects from a reject archive folder (``--archive DIR``) into the review store.

The archive (:mod:`edge.archive`) keeps, per archived part, the schema-v1 JSON record and the
frame beside it (``YYYYMMDD/HHMMSS.mmm_<seq>_<part>.json`` + ``.jpg``/``.png``) and an SQLite
index (``index.sqlite``). This adapter lists fails through the index
(:func:`edge.archive_index.query_archive`, read-only, safe while the runtime writes), and falls
back to reading the JSON records (:func:`edge.archive_index.iter_json_records`) when there is no
index or it is unreadable (e.g. a copied folder).

Frames are copied into the review store: the archive's retention deletes old records, but a
reviewed frame must stay available for ``export-review``. Only records newer than
``review.keep_unreviewed_days`` are imported (older unreviewed ones would be pruned anyway).
Re-importing is idempotent (the store ignores rejects it has); :class:`ArchiveImporter` only
asks for records newer than its previous scan. Unreadable records and corrupt frames are skipped
and counted.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edge.archive_index import INDEX_NAME, iter_json_records, query_archive
from edge.review.messages import MessageError, check_image, parse_part
from edge.review.store import ReviewStore

log = logging.getLogger("edgeqc.review.archive")

IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg")
PAGE = 1000


@dataclass
class ImportStats:
    """Counts of one scan: ``records`` read, ``added`` new rejects, ``passes`` skipped,
    ``bad_records`` (not schema-v1 JSON / unreadable), ``missing_frames``, ``corrupt_frames``."""

    records: int = 0
    added: int = 0
    passes: int = 0
    bad_records: int = 0
    missing_frames: int = 0
    corrupt_frames: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if k != "errors"}


def _from_index(root: Path, since: float) -> Iterator[tuple[Path, Path | None]]:
    offset = 0
    while True:
        page = query_archive(root, verdict="fail", since=since, limit=PAGE, offset=offset)
        for r in page:
            yield root / r.json_path, (root / r.image_path if r.image_path else None)
        if len(page) < PAGE:
            return
        offset += PAGE


def _from_files(root: Path, since: float) -> Iterator[tuple[Path, Path | None]]:
    for js in iter_json_records(root):
        try:
            if js.stat().st_mtime < since:
                continue
        except OSError:
            continue
        img = next((js.with_suffix(s) for s in IMAGE_SUFFIXES if js.with_suffix(s).is_file()), None)
        yield js, img


def archived_rejects(root: Path, since: float = 0.0) -> Iterator[tuple[Path, Path | None]]:
    """``(json_path, image_path | None)`` of archived records from ``since`` (UNIX s) on: fails via
    the index (trigger time >= since), else every record (file time >= since)."""
    if (root / INDEX_NAME).is_file():
        try:
            yield from list(_from_index(root, since))
            return
        except sqlite3.DatabaseError as exc:
            log.warning("archive index %s unreadable (%s): reading the JSON records instead", root / INDEX_NAME, exc)
    yield from _from_files(root, since)


def import_archive(
    store: ReviewStore,
    folder: str | Path,
    since: float = 0.0,
    on_added: Callable[[int], None] | None = None,
) -> ImportStats:
    """File every archived reject under ``folder`` from ``since`` (UNIX s) on.
    ``on_added(reject_id)`` is called for each new one.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"--archive {str(root)!r}: not a folder")
    st = ImportStats()
    for js, img in archived_rejects(root, since):
        st.records += 1
        try:
            data = js.read_bytes()
            msg = parse_part(data)
        except (OSError, MessageError) as exc:  # deleted by retention meanwhile, or not schema v1
            st.bad_records += 1
            if len(st.errors) < 10:
                st.errors.append(f"{js}: {exc}")
            continue
        if not msg.is_reject:
            st.passes += 1
            continue
        image = fmt = None
        if img is None:
            st.missing_frames += 1
        else:
            try:
                raw = img.read_bytes()
            except OSError:
                raw = b""
            fmt = check_image(raw)
            if fmt is None:
                st.corrupt_frames += 1
            else:
                image = raw
        rid, change = store.add_reject(msg, image, fmt, origin="archive")
        if change == "new":
            st.added += 1
        if change != "none" and on_added is not None:
            on_added(rid)
    return st


class ArchiveImporter:
    """Repeated incremental imports of one archive folder (the review server runs one every 30 s).

    Args:
        max_age_s: only records younger than this are imported (``review.keep_unreviewed_days``).
    """

    OVERLAP_S = 300.0  # records are indexed a little after their trigger time

    def __init__(
        self, store: ReviewStore, folder: str | Path, max_age_s: float, on_added: Callable[[int], None] | None = None
    ) -> None:
        self.store = store
        self.folder = Path(folder)
        self.max_age_s = max_age_s
        self.on_added = on_added
        self._since: float | None = None
        self.total = ImportStats()

    def scan(self) -> ImportStats:
        started = time.time()
        since = started - self.max_age_s if self._since is None else self._since
        st = import_archive(self.store, self.folder, since=since, on_added=self.on_added)
        self._since = started - self.OVERLAP_S
        for k, v in st.to_dict().items():
            setattr(self.total, k, getattr(self.total, k) + v)
        for e in st.errors:
            log.warning("archive import: %s", e)
        if st.added or st.bad_records:
            log.info("archive import from %s: %s", self.folder, st.to_dict())
        return st
