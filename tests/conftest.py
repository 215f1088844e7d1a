"""Shared test fixtures: where ../shared is, and skips when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
EFFNET = SHARED / "models" / "mt-effnet-lite0" / "model.onnx"
YOLO = SHARED / "models" / "mt-yolo-cls" / "model.onnx"
VAL = SHARED / "datasets" / "magnetic-tile" / "val"
CALIB = SHARED / "datasets" / "magnetic-tile" / "calib"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared (models and datasets) not present")
    return SHARED


@pytest.fixture(scope="session")
def effnet_path(shared: Path) -> Path:
    return EFFNET


@pytest.fixture(scope="session")
def yolo_path(shared: Path) -> Path:
    if not YOLO.is_file():
        pytest.skip("mt-yolo-cls not present")
    return YOLO


@pytest.fixture(scope="session")
def val_dir(shared: Path) -> Path:
    return VAL


@pytest.fixture(scope="session")
def calib_dir(shared: Path) -> Path:
    return CALIB
