"""``demo_settings``: the default demo archive is per user (no shared /tmp folder between users)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from edge.demo.run import demo_settings


def test_default_demo_archive_is_per_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEQC_ARCHIVE__PATH", raising=False)
    s = demo_settings()
    assert s.archive.path == str(Path(tempfile.gettempdir()) / f"edgeqc-demo-archive-{os.getuid()}")


def test_archive_path_from_the_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEQC_ARCHIVE__PATH", str(tmp_path / "mine"))
    assert demo_settings().archive.path == str(tmp_path / "mine")
