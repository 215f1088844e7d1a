"""Built-in demo: synthetic machined parts (:mod:`edge.demo.synth`) and a small classifier trained on them.

``DEMO_MODEL`` is the committed ONNX classifier (``tools/make_demo_model.py`` made it; facts in
``DEMO_MODEL_INFO``). Importing this package is cheap: the renderer (OpenCV) loads only with
``edge.demo.synth``.
"""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
DEMO_MODEL = DEMO_DIR / "demo_model.onnx"
DEMO_MODEL_INFO = DEMO_DIR / "demo_model.json"

__all__ = ["DEMO_DIR", "DEMO_MODEL", "DEMO_MODEL_INFO"]
