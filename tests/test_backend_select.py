"""FP32 vs INT8 sibling choice on the CPU, with tiny real ONNX models under ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import make_classifier

from edge.backends import BackendError
from edge.backends.select import choose_cpu_model, int8_sibling
from edge.settings import ModelSettings

FIVE = ["a", "b", "c", "d", "e"]


def settings(path: Path, **kw) -> ModelSettings:
    return ModelSettings(path=str(path), labels=FIVE, **kw)


def test_sibling_naming(tmp_path: Path) -> None:
    fp32 = make_classifier(tmp_path / "net.onnx")
    assert int8_sibling(fp32) is None
    int8 = make_classifier(tmp_path / "net.int8.onnx", qdq=True)
    assert int8_sibling(fp32) == int8
    assert int8_sibling(int8) is None  # an INT8 model has no INT8 sibling
    assert int8_sibling(tmp_path / "net.engine") is None


def test_choice_without_sibling_and_when_told(tmp_path: Path) -> None:
    fp32 = make_classifier(tmp_path / "net.onnx")
    c = choose_cpu_model(settings(fp32))
    assert (c.path, c.precision, c.latency_ms) == (fp32, "fp32", {}) and "no INT8 model" in c.reason
    with pytest.raises(BackendError, match=r"INT8 model requested but .*net\.int8\.onnx does not exist"):
        choose_cpu_model(settings(fp32), prefer="int8")
    int8 = make_classifier(tmp_path / "net.int8.onnx", qdq=True)
    assert choose_cpu_model(settings(fp32), prefer="int8").path == int8
    assert choose_cpu_model(settings(fp32), prefer="fp32").path == fp32
    with pytest.raises(ValueError, match="prefer = 'fast'"):
        choose_cpu_model(settings(fp32), prefer="fast")


def test_auto_measures_both_and_keeps_the_faster(tmp_path: Path) -> None:
    fp32 = make_classifier(tmp_path / "net.onnx")
    int8 = make_classifier(tmp_path / "net.int8.onnx", qdq=True)
    c = choose_cpu_model(settings(fp32, intra_op_threads=1), runs=5, warmup=1)
    assert set(c.latency_ms) == {"fp32", "int8"} and all(v > 0 for v in c.latency_ms.values())
    faster = "int8" if c.latency_ms["int8"] < 0.97 * c.latency_ms["fp32"] else "fp32"
    assert c.precision == faster and c.path == (int8 if faster == "int8" else fp32)
    assert c.spec is not None and c.spec.labels == tuple(FIVE)


def test_engines_and_noop_are_left_alone(tmp_path: Path) -> None:
    engine = tmp_path / "net.engine"
    engine.write_bytes(b"x")
    assert choose_cpu_model(ModelSettings(path=str(engine))).path == engine
    fp32 = make_classifier(tmp_path / "net.onnx")
    make_classifier(tmp_path / "net.int8.onnx", qdq=True)
    c = choose_cpu_model(settings(fp32, backend="noop"))
    assert c.path == fp32 and c.latency_ms == {}
