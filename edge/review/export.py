"""Reviewed rejects -> a labelled folder (one subfolder per class) + ``verdicts.csv``.

The folder is what ``edgeqc evaluate`` and a retraining script read: ``DIR/<class>/<file>``, every
class folder named after a model label. The class of a reviewed reject is

* *part is good* (false reject): the class the operator chose, else the pass class
  (``decision.pass_classes[0]`` unless given);
* *confirm defect*: the class the operator chose, else the predicted label.

``verdicts.csv`` has one row per reviewed reject (also those without a frame, whose ``file`` is
empty), with the predicted label, the operator verdict, who and when. A cell that starts with
``=``, ``+``, ``-``, ``@``, TAB or CR gets a leading ``'`` so a spreadsheet shows it as text instead
of running it as a formula (OWASP, "CSV Injection": https://owasp.org/www-community/attacks/CSV_Injection).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.review.store import CLASS_NAME, ReviewStore

CSV_NAME = "verdicts.csv"
CSV_COLUMNS = (
    "file", "class", "verdict", "predicted_label", "probability", "reason", "failsafe",
    "station_id", "seq", "part_id", "time_utc", "reviewed_by", "reviewed_at_utc",
    "source_id", "model_sha256", "reject_id",
)


class ExportError(ValueError):
    """The export cannot be written as asked (the text names the problem)."""


@dataclass
class ExportSummary:
    """What was written: ``images`` per class, ``rows`` in the CSV, ``missing_image`` = reviewed
    rejects without a frame (CSV row only)."""

    out_dir: Path
    images: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    missing_image: int = 0

    @property
    def total_images(self) -> int:
        return sum(self.images.values())

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "images": dict(sorted(self.images.items())),
                "total_images": self.total_images, "rows": self.rows, "missing_image": self.missing_image}


def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` safe for a spreadsheet: a text starting with one of :data:`FORMULA_START` gets a
    leading ``'`` (OWASP CSV injection guidance); anything else is returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _file_name(r: dict[str, Any]) -> str:
    stamp = datetime.fromtimestamp(r["ts"], tz=timezone.utc).strftime("%Y%m%dT%H%M%S%f")[:-3]
    station = _UNSAFE.sub("_", r["station_id"])
    part = _UNSAFE.sub("_", r["part_id"]) or "part"
    return f"{stamp}Z_{station}_{r['seq']}_{part}_r{r['id']}.{r['image_format']}"


def export_class(r: dict[str, Any], pass_class: str) -> str:
    """The folder a reviewed reject goes to (see the module docstring)."""
    if r["review"] == "good":
        return str(r["true_class"] or pass_class)
    return str(r["true_class"] or r["label"])


def export_review(store: ReviewStore, out_dir: str | Path, pass_class: str) -> ExportSummary:
    """Write every reviewed reject of ``store`` to ``out_dir``.

    Args:
        pass_class: folder for false rejects without an operator-chosen class.

    Raises:
        ExportError: ``out_dir`` is a file, or exists and is not empty (an old export mixed in
            would make a wrong data set), or ``pass_class`` is not a valid folder name, or not a
            label seen in the store (checked once the store has seen any label).
        OSError: ``out_dir`` cannot be created or written (the CLI reports it, exit 1).
    """
    if not CLASS_NAME.match(pass_class):
        raise ExportError(f"pass class = {pass_class!r}: expected 1-64 characters [A-Za-z0-9_.-]")
    known = store.labels()
    if known and pass_class not in known:
        raise ExportError(f"pass class = {pass_class!r}: not a model label seen in the review store; expected one "
                          f"of {', '.join(known)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"export folder {str(out)!r} is a file, not a folder: choose a new or empty folder")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"export folder {str(out)!r} exists and is not empty: choose a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    summary = ExportSummary(out_dir=out)
    with (out / CSV_NAME).open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for r in store.reviewed():
            cls = export_class(r, pass_class)
            rel = ""
            img = store.image(r["id"]) if r["has_image"] else None
            if img is not None:
                name = _file_name(r)
                (out / cls).mkdir(exist_ok=True)
                (out / cls / name).write_bytes(img[0])
                rel = f"{cls}/{name}"
                summary.images[cls] = summary.images.get(cls, 0) + 1
            else:
                summary.missing_image += 1
            model = r.get("model") or {}
            w.writerow([csv_cell(v) for v in (
                rel, cls, r["review"], r["label"], f"{r['probability']:.6f}", r["reason"], r["failsafe"] or "",
                r["station_id"], r["seq"], r["part_id"], _iso(r["ts"]), r["reviewed_by"], _iso(r["reviewed_ts"]),
                r["source_id"] or "", model.get("sha256", "") if isinstance(model, dict) else "", r["id"],
            )])
            summary.rows += 1
    return summary
