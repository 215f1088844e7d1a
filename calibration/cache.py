"""Cache of calibration ranges, keyed by what determines them.

Key = sha256 of (FP32 model sha256, calibration set sha256 — file list + contents —,
calibration settings that change the ranges, the preprocessing part of the model spec, and
the ONNX Runtime version). A hit means the ranges on disk were computed from exactly this model
and these images with these settings, so calibration inference is skipped.

Layout: ``<cache dir>/<key>.ranges.json`` (ORT's calibration cache format) and
``<key>.meta.json`` (images used / skipped, timings). Both are written atomically; an entry
counts only when both exist.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CACHE_DIR = ".edgeqc-cache"


def cache_key(parts: Mapping[str, Any]) -> str:
    """Stable 32-hex-digit key of a JSON-able mapping (sorted keys)."""
    blob = json.dumps(dict(parts), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def file_mode() -> int:
    """Permission bits a normally created file gets here (0o666 minus the umask): temporary files
    from ``tempfile.mkstemp`` are 0600, which would hide a model or engine from the service user."""
    um = os.umask(0o022)
    os.umask(um)
    return 0o666 & ~um


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, ``os.replace``
    (readers see the old or the new file, never a partial one; a failed write leaves the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON to ``path`` with :func:`write_bytes_atomic`."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


@dataclass(frozen=True)
class RangeCache:
    """A folder of cached ranges (``None`` folder = caching off: every lookup misses)."""

    folder: Path | None

    def ranges_path(self, key: str) -> Path:
        if self.folder is None:
            raise ValueError("cache is disabled")
        return self.folder / f"{key}.ranges.json"

    def meta_path(self, key: str) -> Path:
        if self.folder is None:
            raise ValueError("cache is disabled")
        return self.folder / f"{key}.meta.json"

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The stored meta dict when both files of ``key`` exist and the meta parses, else None."""
        if self.folder is None:
            return None
        rp, mp = self.ranges_path(key), self.meta_path(key)
        if not (rp.is_file() and mp.is_file()):
            return None
        try:
            meta = json.loads(mp.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return meta if isinstance(meta, dict) else None

    def store_meta(self, key: str, meta: Mapping[str, Any]) -> None:
        """Record ``meta`` for ``key`` (call after the ranges file is written)."""
        write_json_atomic(self.meta_path(key), dict(meta))
