"""Static checks in the test run: the TensorRT code against the TensorRT 10.3 and 11.4 API stubs.

TensorRT cannot be installed on CI machines (../shared/notes/facts.md §1), so this mypy --strict
run over ../shared/stubs is what keeps the engine builder and the TensorRT backend honest.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_tensorrt_code_typechecks_against_10_3_and_11_4(shared: Path) -> None:
    if not (shared / "stubs" / "tensorrt-10.3").is_dir():
        pytest.skip("TensorRT stubs not present in ../shared/stubs")
    r = subprocess.run(["bash", str(REPO / "tools" / "typecheck.sh")], capture_output=True, text=True,
                       timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_is_clean() -> None:
    ruff = REPO / ".venv" / "bin" / "ruff"
    if not ruff.exists():
        pytest.skip("ruff not installed in .venv")
    r = subprocess.run([str(ruff), "check", "edge", "calibration", "trt_build", "tools"], capture_output=True,
                       text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_is_clean_on_the_packages() -> None:
    """mypy (pyproject's [tool.mypy]: not strict) over the three packages: a wrong signature
    between modules (e.g. a callback type) shows up here, not on a line."""
    mypy = REPO / ".venv" / "bin" / "mypy"
    if not mypy.exists():
        pytest.skip("mypy not installed in .venv")
    r = subprocess.run([str(mypy), "edge", "calibration", "trt_build"], capture_output=True, text=True,
                       timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
