"""Reject archive on a real, tiny filesystem (a 2 MiB tmpfs) that fills up.

Mounting needs privileges: the scenario runs in a child process inside a new user + mount
namespace (``unshare -Urm``), which works for an unprivileged user where the kernel allows user
namespaces, and as root. Where neither works the test is skipped (it says why).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCENARIO = r"""
import json, subprocess, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[2])
from edge.archive import RejectArchive
from edge.decision import Verdict
from edge.result import InspectionResult
from edge.settings import ArchiveSettings

mnt = Path(sys.argv[1])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
rng = np.random.default_rng(1)

def run(name, max_bytes, n):
    root = mnt / name
    arc = RejectArchive(ArchiveSettings(path=str(root), image_format="png", max_bytes=max_bytes),
                        clock=lambda: 1_764_470_000.0 + 86400)
    for seq in range(1, n + 1):
        frame = rng.integers(0, 256, (115, 115, 3), dtype=np.uint8)  # ~40 kB PNG, incompressible
        arc.handle(InspectionResult(seq=seq, part_id=f"P{seq}", station_id="s", trigger_ts=1_764_470_000.0 + seq,
                                    verdict=Verdict(False, "crack", 0.9, "crack"), frame=frame))
    ok = arc.close(120.0)
    files = sorted(str(p.relative_to(root)) for p in root.glob("2*/*"))
    st = arc.stats
    st.update(closed=ok, json_files=sum(f.endswith(".json") for f in files),
              disk_bytes=sum((root / f).stat().st_size for f in files),
              tmp_left=len(list((root / ".tmp").iterdir())), seqs=sorted(r.seq for r in arc.query(limit=1000)))
    for p in list(root.glob("2*/*")):
        p.unlink()
    return st

out = {"bytes_limit": run("limited", 800_000, 60)}
out["disk_full"] = run("full", 100_000_000, 100)
print("RESULT " + json.dumps(out))
"""


def _run_in_namespace(tmp_path: Path) -> dict:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) not installed")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    proc = subprocess.run(
        ["unshare", "-Urm", sys.executable, str(script), str(mnt), str(REPO)],
        check=False, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0 and ("Operation not permitted" in proc.stderr or "unshare failed" in proc.stderr):
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_archive_on_a_filesystem_that_fills(tmp_path: Path) -> None:
    out = _run_in_namespace(tmp_path)

    lim = out["bytes_limit"]  # max_bytes (800 kB) below the 2 MiB filesystem: never runs full
    assert lim["closed"] and lim["written"] == 60 and lim["errors"] == 0 and lim["dropped_error"] == 0
    assert lim["disk_bytes"] == lim["bytes"] <= 800_000
    assert lim["deleted_bytes"] == 60 - lim["records"] and lim["json_files"] == lim["records"]
    assert lim["seqs"] == list(range(61 - lim["records"], 61))  # the newest are kept

    full = out["disk_full"]  # max_bytes far above the filesystem: ENOSPC decides
    assert full["closed"] and full["accepted"] == 100
    assert full["errors_enospc"] >= 1 and full["deleted_enospc"] >= 1
    assert full["written"] + full["dropped_error"] == 100
    assert full["written"] >= 90  # a full disk costs at most a few records, not the rest of the shift
    assert full["json_files"] == full["records"] == len(full["seqs"]) and full["disk_bytes"] == full["bytes"]
    assert full["seqs"][-1] == 100 and full["tmp_left"] == 0
    assert full["disk_bytes"] < 2 * 1024 * 1024
