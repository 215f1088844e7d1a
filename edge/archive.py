"""Reject archive: every reject (and a sample of passes) written to disk, off the inspection path.

Layout (UTC, so names sort by time across daylight-saving changes)::

    <archive.path>/
      index.sqlite                                  SQLite index (WAL), see edge/archive_index.py
      20251130/031320.123_00000017_A1234.jpg        the frame (jpg or png), RGB frame -> BGR file
      20251130/031320.123_00000017_A1234.json       the ZeroMQ schema-v1 message, unchanged
      .tmp/                                         files being written (emptied at start)

``HHMMSS.mmm`` is the part's trigger time, then the sequence number and the part id.
Each file is written to ``.tmp/``, fsynced, and renamed into place only after its index row is
committed, so a power cut leaves no half-written record and no file the retention cannot see.

Threads: :meth:`RejectArchive.handle` (outputs thread) only decides and enqueues; one writer
thread encodes, writes, indexes and applies retention. The queue is bounded by item count
(``archive.queue_size``) and by frame bytes (``archive.queue_max_bytes``); beyond that items are
dropped and counted. No disk error (full disk, read-only, missing mount, corrupt index) ever
reaches the caller: errors are counted in :attr:`RejectArchive.stats` and logged (rate-limited).

Retention: oldest records go first when the frame+JSON bytes exceed ``archive.max_bytes``, when
they are older than ``archive.max_age_days`` (checked every minute), and when a write fails with
ENOSPC/EDQUOT (then the write is retried once).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge.archive_index import (
    INDEX_NAME,
    ArchiveIndex,
    ArchiveRecord,
    count_archive,
    iter_json_records,
    query_archive,
)
from edge.priority import background_thread
from edge.settings import ArchiveSettings

log = logging.getLogger("edgeqc.archive")

TMP_DIR = ".tmp"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_STOP = object()
_RETAIN = object()
_PASS_SCALE = 1_000_000  # pass sampling in integer steps of 1e-6 (exact counts, no float drift)
_LOG_EVERY_S = 60.0
_AGE_CHECK_S = 60.0
_REOPEN_S = 10.0

COUNTERS = (
    "accepted", "written", "written_bytes", "passes_sampled",
    "dropped_queue_full", "dropped_error", "dropped_shutdown",
    "errors_enospc", "errors_io", "errors_index", "errors_encode",
    "deleted_bytes", "deleted_age", "deleted_enospc",
)


class _DiskFull(Exception):
    """A write or index insert failed because the filesystem is full."""


def encode_frame(frame_bgr: np.ndarray, image_format: str, jpeg_quality: int = 95) -> bytes:
    """Encode a frame for the archive.

    Args:
        frame_bgr: ``[H,W]`` gray or ``[H,W,3]`` BGR (``[H,W,4]`` BGRA), uint8 or uint16.
            uint16 becomes 8-bit for JPEG (value / 257); PNG keeps 16 bits.
        image_format: ``"jpg"`` or ``"png"``.
        jpeg_quality: 1..100.

    Raises:
        ValueError: unsupported shape or dtype, or OpenCV could not encode it.
    """
    import cv2

    img = np.asarray(frame_bgr)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4))):
        raise ValueError(f"frame shape {img.shape}: expected [H,W], [H,W,3] or [H,W,4]")
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"frame dtype {img.dtype}: expected uint8 or uint16")
    if image_format == "jpg":
        if img.dtype == np.uint16:
            img = cv2.convertScaleAbs(img, alpha=1 / 257)
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[:, :, :3]
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    elif image_format == "png":
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        raise ValueError(f"image_format = {image_format!r}: expected 'jpg' or 'png'")
    if not ok:
        raise ValueError(f"OpenCV could not encode a {img.shape} {img.dtype} frame as {image_format}")
    return buf.tobytes()


def _frame_bgr(result: Any) -> np.ndarray | None:
    """The result's frame in BGR (``InspectionResult.frame_bgr()``; plain RGB ``.frame`` otherwise)."""
    fn = getattr(result, "frame_bgr", None)
    if callable(fn):
        return fn()
    f = getattr(result, "frame", None)
    if f is None:
        return None
    if f.ndim == 3 and f.shape[2] == 3 and getattr(result, "channel_order", "RGB") == "RGB":
        return np.ascontiguousarray(f[:, :, ::-1])
    return f


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def record_stem(msg: Mapping[str, Any], fallback_ts: float) -> tuple[str, str, float]:
    """``("YYYYMMDD", "HHMMSS.mmm_<seq:08d>_<part_id>", ts)`` for a message (trigger time, UTC)."""
    ts = next((float(msg[k]) for k in ("trigger_ts", "capture_ts", "decision_ts") if msg.get(k) is not None),
              fallback_ts)
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    part = re.sub(r"[^A-Za-z0-9_-]", "_", str(msg.get("part_id") or "noid"))[:32]
    seq = int(msg.get("seq") or 0)
    return dt.strftime("%Y%m%d"), f"{dt:%H%M%S}.{dt.microsecond // 1000:03d}_{seq:08d}_{part}", ts


def _write_tmp(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class RejectArchive:
    """Output sink that archives rejects (and sampled passes) with a SQLite index.

    Args:
        settings: ``settings.archive``.
        clock: wall clock in UNIX seconds (used for age retention and records without timestamps).
        start: start the writer thread now (else call :meth:`start`).

    ``handle(result)`` needs ``result.to_message()`` (schema v1) and the frame from
    ``result.frame_bgr()`` or ``result.frame`` (RGB). The frame is kept by reference until it is
    written: the loop must not modify a frame after handing its result to the sinks.
    """

    def __init__(self, settings: ArchiveSettings, *, clock: Callable[[], float] = time.time,
                 start: bool = True) -> None:
        self.settings = settings
        self.root = Path(settings.path)
        self._clock = clock
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._pending = 0          # accepted, not yet finished
        self._queued_bytes = 0     # frame bytes held by pending items
        self._records = 0
        self._bytes = 0
        self._last_error: str | None = None
        self._pass_acc = 0
        self._pass_step = round(settings.pass_sample_rate * _PASS_SCALE)
        self._closing = False
        self._abort = False
        self._q: queue.Queue[Any] = queue.Queue()
        self._index: ArchiveIndex | None = None
        self._next_open = 0.0
        self._next_age_check = 0.0
        self._log_state: dict[str, tuple[float, int]] = {}
        self._thread: threading.Thread | None = None
        self._started = False
        if settings.enabled:
            self._thread = threading.Thread(target=self._run, name="edgeqc-archive", daemon=True)
            if start:
                self.start()

    def start(self) -> RejectArchive:
        """Start the writer thread (done by the constructor unless ``start=False``; records handed
        in before are queued, within the queue bounds)."""
        if self._thread is not None and not self._started:
            self._started = True
            self._thread.start()
        return self

    # ------------------------------------------------------------------ sink API (outputs thread)
    def handle(self, result: Any) -> None:
        """Queue a reject (or a sampled pass) for writing; never blocks, never raises on disk trouble."""
        if self._thread is None:
            return
        reject = getattr(result, "is_reject", None)
        if reject is None:
            reject = result.to_message().get("verdict") != "pass"
        if not reject and not self._sample_pass():
            return  # a pass, not sampled: nothing more to build
        msg = result.to_message()
        # the reject publisher's encoding, when it used this format and quality: encoded once
        cached = getattr(result, "encoded_if_cached", None)
        image = cached(self.settings.image_format, self.settings.jpeg_quality) if callable(cached) else None
        frame: np.ndarray | bytes | None = image if image is not None else _frame_bgr(result)
        nbytes = len(frame) if isinstance(frame, bytes) else int(frame.nbytes) if frame is not None else 0
        with self._lock:
            if self._closing:
                self._counts["dropped_shutdown"] += 1
                return
            if (self._pending >= self.settings.queue_size
                    or (self._pending and self._queued_bytes + nbytes > self.settings.queue_max_bytes)):
                self._counts["dropped_queue_full"] += 1
                dropped = self._counts["dropped_queue_full"]
                full = True
            else:
                self._pending += 1
                self._queued_bytes += nbytes
                self._counts["accepted"] += 1
                full = False
        if full:
            self._report("queue_full", f"queue full ({self.settings.queue_size} items / "
                         f"{self.settings.queue_max_bytes} bytes): record dropped ({dropped} so far)")
            return
        self._q.put((msg, frame, nbytes))

    def _sample_pass(self) -> bool:
        if self._pass_step <= 0:
            return False
        with self._lock:
            self._pass_acc += self._pass_step
            if self._pass_acc >= _PASS_SCALE:
                self._pass_acc -= _PASS_SCALE
                self._counts["passes_sampled"] += 1
                return True
        return False

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every accepted record is written or dropped; True if done within ``timeout`` s."""
        end = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is queued (up to ``timeout`` s), then stop. Records left are counted as
        ``dropped_shutdown``. Returns True if everything queued was written or dropped in time."""
        if self._thread is None:
            return True
        with self._lock:
            self._closing = True
        self._q.put(_STOP)
        self.start()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort = True  # the writer drops the rest, counted; it is a daemon thread
            log.error("archive: not flushed within %.1f s; %d record(s) dropped", timeout, self._pending)
            return False
        return True

    @property
    def stats(self) -> dict[str, Any]:
        """Counters (see ``COUNTERS``) plus ``queued`` (items), ``queued_bytes``, ``records`` and
        ``bytes`` (frame+JSON bytes now on disk, per the index) and ``last_error`` (text or None)."""
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            out.update(queued=self._pending, queued_bytes=self._queued_bytes, records=self._records,
                       bytes=self._bytes, last_error=self._last_error)
        out["errors"] = sum(out[k] for k in COUNTERS if k.startswith("errors_"))
        return out

    def query(self, **filters: Any) -> list[ArchiveRecord]:
        """Newest first; see :func:`edge.archive_index.query_archive` for the filters."""
        return query_archive(self.root, **filters)

    def count(self, **filters: Any) -> int:
        return count_archive(self.root, **filters)

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        background_thread()  # disk work after the RES (edge.priority)
        try:
            self._ensure_open()
        except (OSError, sqlite3.Error):
            log.debug("archive: first open failed (counted); retried with the next record")
        while True:
            try:
                item = self._q.get(timeout=_AGE_CHECK_S / 4)
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            nbytes = 0
            try:
                if item is _RETAIN:
                    self._next_age_check = 0.0
                    if self._index is not None:
                        self._enforce_bytes(self._index)
                elif item is not None:
                    nbytes = item[2]
                    if self._abort:
                        self._count("dropped_shutdown")
                    else:
                        self._process(item[0], item[1])
                if time.monotonic() >= self._next_age_check and self._index is not None:
                    self._next_age_check = time.monotonic() + _AGE_CHECK_S
                    self._enforce_age()
            except Exception as exc:  # noqa: BLE001  (the writer thread must never die)
                self._error("errors_io", "unexpected", exc)
                if item is not None and item is not _RETAIN:
                    self._count("dropped_error")
            finally:
                if item is not None:
                    self._finish(nbytes)
        if self._index is not None:
            try:
                self._index.close()
            except sqlite3.Error:
                pass

    def _finish(self, nbytes: int) -> None:
        with self._idle:
            self._pending -= 1
            self._queued_bytes -= nbytes
            if not self._pending:
                self._idle.notify_all()

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def _report(self, kind: str, text: str) -> None:
        """Log at ERROR the first time, then at most once a minute per kind with the count."""
        now = time.monotonic()
        last, suppressed = self._log_state.get(kind, (-1e18, 0))
        if now - last >= _LOG_EVERY_S:
            extra = f" ({suppressed} more since the last report)" if suppressed else ""
            log.error("archive: %s%s", text, extra)
            self._log_state[kind] = (now, 0)
        else:
            self._log_state[kind] = (last, suppressed + 1)

    def _error(self, key: str, what: str, exc: BaseException) -> None:
        text = f"{what}: {exc}"
        with self._lock:
            self._counts[key] += 1
            self._last_error = text
        self._report(key, text)

    def _ensure_open(self) -> ArchiveIndex:
        if self._index is not None:
            return self._index
        if time.monotonic() < self._next_open:
            raise OSError(f"archive {self.root} unavailable (retrying): {self._last_error}")
        try:
            self._index = self._open()
        except (OSError, sqlite3.Error) as exc:
            self._next_open = time.monotonic() + _REOPEN_S
            self._error("errors_io", f"cannot open archive folder {self.root}", exc)
            raise
        return self._index

    def _open(self) -> ArchiveIndex:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / TMP_DIR
        tmp.mkdir(exist_ok=True)
        for p in tmp.iterdir():  # leftovers of an interrupted write
            _unlink(p)
        path = self.root / INDEX_NAME
        existed = path.exists()
        try:
            index = ArchiveIndex(path)
        except sqlite3.DatabaseError as exc:
            aside = path.with_name(f"{INDEX_NAME}.corrupt-{int(self._clock())}")
            log.error("archive: index %s is unreadable (%s); moved to %s, rebuilding from the JSON records",
                      path, exc, aside.name)
            os.replace(path, aside)
            for suffix in ("-wal", "-shm"):
                _unlink(path.with_name(INDEX_NAME + suffix))
            index = ArchiveIndex(path)
            self._rebuild(index)
        else:
            if not existed:
                self._rebuild(index)
        n, b = index.totals()
        with self._lock:
            self._records, self._bytes = n, b
        log.info("archive: %s open, %d record(s), %d bytes", self.root, n, b)
        return index

    def _rebuild(self, index: ArchiveIndex) -> None:
        rows = []
        for jp in iter_json_records(self.root):
            try:
                msg = json.loads(jp.read_bytes())
                size = jp.stat().st_size
            except (OSError, ValueError):
                continue
            img = next((jp.with_suffix(s) for s in (".jpg", ".png") if jp.with_suffix(s).exists()), None)
            if img is not None:
                size += img.stat().st_size
            _, _, ts = record_stem(msg, jp.stat().st_mtime)
            rows.append(self._row(msg, ts, img.relative_to(self.root) if img else None,
                                  jp.relative_to(self.root), size))
        if rows:
            index.insert_many(rows)
            log.info("archive: index rebuilt with %d record(s)", len(rows))

    @staticmethod
    def _row(msg: Mapping[str, Any], ts: float, image: Path | None, js: Path, size: int) -> dict[str, Any]:
        return {
            "ts": ts, "seq": msg.get("seq"), "part_id": msg.get("part_id"), "label": msg.get("label"),
            "probability": msg.get("probability"), "verdict": msg.get("verdict"), "reason": msg.get("reason"),
            "failsafe": msg.get("failsafe"), "image_path": str(image) if image else None,
            "json_path": str(js), "bytes": size,
        }

    def _process(self, msg: dict[str, Any], frame: np.ndarray | bytes | None) -> None:
        """Write one record; ``frame`` is the BGR frame to encode, or its encoded bytes."""
        try:
            index = self._ensure_open()
        except (OSError, sqlite3.Error):
            self._count("dropped_error")
            return
        image: bytes | None = frame if isinstance(frame, bytes) else None
        if isinstance(frame, np.ndarray):
            try:
                image = encode_frame(frame, self.settings.image_format, self.settings.jpeg_quality)
            except Exception as exc:  # noqa: BLE001  (cv2.error is not a ValueError)
                self._error("errors_encode", f"part {msg.get('part_id')}: frame not encoded, record kept", exc)
        body = (json.dumps(msg, separators=(",", ":"), default=_json_default) + "\n").encode()
        try:
            self._write_record(index, msg, image, body)
        except _DiskFull as exc:
            self._count("errors_enospc")
            # Free a margin, so the next records do not hit the full disk again at once.
            self._free_space(index, max(4 * (len(body) + len(image or b"")), self.settings.max_bytes // 100))
            try:
                self._write_record(index, msg, image, body)
            except (_DiskFull, OSError, sqlite3.Error) as exc2:
                self._error("errors_enospc", "disk full, record dropped after freeing the oldest", exc2)
                self._count("dropped_error")
                return
            self._report("errors_enospc", f"disk full ({exc}); deleted the oldest records and retried")
        except sqlite3.Error as exc:
            self._error("errors_index", "index insert failed, record dropped", exc)
            self._count("dropped_error")
            return
        except OSError as exc:
            self._error("errors_io", "write failed, record dropped", exc)
            self._count("dropped_error")
            return
        if self._bytes > self.settings.max_bytes:
            self._enforce_bytes(index)

    def _write_record(self, index: ArchiveIndex, msg: dict[str, Any], image: bytes | None, body: bytes) -> None:
        day, stem, ts = record_stem(msg, self._clock())
        day_dir = self.root / day
        tmp = self.root / TMP_DIR
        ext = self.settings.image_format
        staged: list[Path] = []
        try:
            day_dir.mkdir(exist_ok=True)
            n = 1
            base = stem
            while (day_dir / f"{stem}.json").exists():
                n += 1
                stem = f"{base}-{n}"
            targets: list[tuple[Path, Path]] = []
            if image is not None:
                t = tmp / f"{stem}.{ext}"
                staged.append(t)
                _write_tmp(t, image)
                targets.append((t, day_dir / f"{stem}.{ext}"))
            t = tmp / f"{stem}.json"
            staged.append(t)
            _write_tmp(t, body)
            targets.append((t, day_dir / f"{stem}.json"))
            size = len(body) + (len(image) if image is not None else 0)
            img_rel = Path(day) / f"{stem}.{ext}" if image is not None else None
            row_id = index.insert(self._row(msg, ts, img_rel, Path(day) / f"{stem}.json", size))
            try:
                for src, dst in targets:
                    os.replace(src, dst)
            except OSError:
                for _, dst in targets:
                    _unlink(dst)
                index.delete([row_id])
                raise
        except OSError as exc:
            for p in staged:
                _cleanup(p)
            if exc.errno in _DISK_FULL:
                raise _DiskFull(str(exc)) from exc
            raise
        except sqlite3.Error as exc:
            for p in staged:
                _cleanup(p)
            if getattr(exc, "sqlite_errorcode", None) == getattr(sqlite3, "SQLITE_FULL", 13):
                raise _DiskFull(str(exc)) from exc
            raise
        with self._lock:
            self._records += 1
            self._bytes += size
            self._counts["written"] += 1
            self._counts["written_bytes"] += size
        log.debug("archive: wrote %s/%s (%d bytes)", day, stem, size, extra={"part_id": msg.get("part_id")})

    # ------------------------------------------------------------------ retention
    def _delete(self, index: ArchiveIndex, records: list[ArchiveRecord], cause: str) -> int:
        freed = 0
        days: set[Path] = set()
        for r in records:
            for rel in (r.image_path, r.json_path):
                if rel:
                    p = self.root / rel
                    days.add(p.parent)
                    try:
                        p.unlink()
                    except FileNotFoundError:
                        pass
                    except OSError as exc:  # row goes anyway: a stuck file must not stall retention
                        self._error("errors_io", f"cannot delete {p}", exc)
            freed += r.bytes
        index.delete([r.id for r in records])
        for d in days:
            try:
                d.rmdir()  # only succeeds when empty
            except OSError:
                pass
        with self._lock:
            self._records -= len(records)
            self._bytes -= freed
            self._counts[f"deleted_{cause}"] += len(records)
        return freed

    def _enforce_bytes(self, index: ArchiveIndex) -> None:
        while self._bytes > self.settings.max_bytes:
            batch = index.oldest(64)
            if not batch:
                break
            over = self._bytes - self.settings.max_bytes
            take, acc = [], 0
            for r in batch:
                take.append(r)
                acc += r.bytes
                if acc >= over:
                    break
            self._delete(index, take, "bytes")

    def _enforce_age(self) -> None:
        index = self._index
        if index is None:
            return
        cutoff = self._clock() - self.settings.max_age_days * 86400.0
        try:
            while True:
                batch = index.older_than(cutoff, 256)
                if not batch:
                    break
                self._delete(index, batch, "age")
        except sqlite3.Error as exc:
            self._error("errors_index", "age retention failed", exc)

    def run_retention(self) -> None:
        """Ask the writer thread to apply age and byte retention now (it also does so every minute
        and after every write); :meth:`flush` waits for it."""
        if self._thread is None:
            return
        with self._lock:
            if self._closing:
                return
            self._pending += 1
        self._q.put(_RETAIN)

    def _free_space(self, index: ArchiveIndex, need: int) -> None:
        """Disk full: delete the oldest records until ``need`` bytes are freed (at least one)."""
        freed = 0
        try:
            while freed < need:
                batch = index.oldest(64)
                if not batch:
                    break
                take, acc = [], 0
                for r in batch:
                    take.append(r)
                    acc += r.bytes
                    if freed + acc >= need:
                        break
                freed += self._delete(index, take, "enospc")
        except sqlite3.Error as exc:
            self._error("errors_index", "freeing space failed", exc)


def _cleanup(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass
