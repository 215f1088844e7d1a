"""TensorRT overlap path (slots, page-locked buffers, one stream per batch) with CUDA/TensorRT fakes.

The fakes of test_backend_tensorrt run every queued operation at once; a wrapper records which
stream each operation was queued on and every synchronize, so the tests check the structure of
the overlap (what goes where, what blocks), not timing.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from test_backend_tensorrt import FakeCuda, FakeStream, fake_tensorrt, make_engine, x_batch
from tiny_models import expected_logits

from edge.backends import BackendError, softmax
from edge.backends.tensorrt import TensorRTBackend
from edge.capture.memory import MemorySource
from edge.inspection import Inspector
from edge.preprocess import preprocess
from edge.settings import ModelSettings, load_settings


class CountingStream(FakeStream):
    def __init__(self, log: list[tuple[str, int]]) -> None:
        self.log = log

    def synchronize(self) -> None:
        self.log.append(("sync", id(self)))


class RecordingCuda(FakeCuda):
    """FakeCuda that logs (operation, id(stream)) and which host arrays were copied from."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, int]] = []
        self.h2d_sources: list[np.ndarray] = []
        self.pinned: list[np.ndarray] = []

    def stream(self) -> CountingStream:
        self.require_context("stream")
        return CountingStream(self.ops)

    def pagelocked_empty(self, shape, dtype) -> np.ndarray:
        arr = super().pagelocked_empty(shape, dtype)
        self.pinned.append(arr)
        return arr

    def memcpy_htod_async(self, dst, src, stream) -> None:
        self.ops.append(("h2d", id(stream)))
        self.h2d_sources.append(src)
        super().memcpy_htod_async(dst, src, stream)

    def memcpy_dtoh_async(self, dst, src, stream) -> None:
        self.ops.append(("d2h", id(stream)))
        super().memcpy_dtoh_async(dst, src, stream)


@pytest.fixture
def cuda() -> RecordingCuda:
    return RecordingCuda()


@pytest.fixture
def trt(monkeypatch, cuda) -> types.ModuleType:
    mod = fake_tensorrt(cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    return mod


def test_two_slots_own_context_stream_and_pinned_buffers(tmp_path: Path, trt, cuda: RecordingCuda) -> None:
    with TensorRTBackend(ModelSettings(path=str(make_engine(tmp_path)), max_batch=4), cuda=cuda) as b:
        assert b.inflight_slots == 2
        buf0, buf1 = b.input_buffer(0), b.input_buffer(1)
        assert buf0.shape == buf1.shape == (4, 3, 8, 8) and buf0.dtype == np.float32
        assert not np.shares_memory(buf0, buf1)
        assert any(buf0 is p for p in cuda.pinned) and any(buf1 is p for p in cuda.pinned)
        assert len(trt.deserialized[0].contexts) == 2  # one execution context per slot
        x0, x1 = x_batch(3, seed=1), x_batch(2, seed=2)
        buf0[:3], buf1[:2] = x0, x1
        cuda.ops.clear()
        p0 = b.submit(0, 3)
        p1 = b.submit(1, 2)  # queued while slot 0 is in flight
        assert [op for op, _ in cuda.ops] == ["h2d", "d2h", "h2d", "d2h"]  # nothing waited for yet
        streams = {sid for _, sid in cuda.ops}
        assert len(streams) == 2
        assert all(np.shares_memory(src, buf) for src, buf in zip(cuda.h2d_sources[-2:], (buf0, buf1)))
        np.testing.assert_allclose(p1.wait(), softmax(expected_logits(x1, 5)), atol=1e-6)
        np.testing.assert_allclose(p0.wait(), softmax(expected_logits(x0, 5)), atol=1e-6)
        syncs = [sid for op, sid in cuda.ops if op == "sync"]
        assert len(syncs) == 2 and set(syncs) == streams  # each wait syncs only its own stream
        ctx0, ctx1 = trt.deserialized[0].contexts
        assert ctx0.executions[-1] == 3 and ctx1.executions[-1] == 2


def test_result_is_a_copy_and_busy_slot_is_refused(tmp_path: Path, trt, cuda: RecordingCuda) -> None:
    with TensorRTBackend(ModelSettings(path=str(make_engine(tmp_path, softmax_out=True)), max_batch=2),
                         cuda=cuda) as b:
        b.input_buffer(0)[:1] = x_batch(1, seed=3)
        p = b.submit(0, 1)
        with pytest.raises(BackendError, match="slot 0 still has a batch in flight"):
            b.submit(0, 1)
        with pytest.raises(BackendError, match="infer while slot 0 has a submitted batch"):
            b.infer(x_batch(1))
        first = p.wait().copy()
        b.input_buffer(0)[:1] = x_batch(1, seed=4)
        b.submit(0, 1).wait()
        np.testing.assert_array_equal(p.wait(), first)  # not overwritten by the next batch
        with pytest.raises(BackendError, match="submit of 3 rows"):
            b.submit(1, 3)
        with pytest.raises(BackendError, match="slot 2 out of range"):
            b.input_buffer(2)


def test_close_frees_every_slot(tmp_path: Path, trt, cuda: RecordingCuda) -> None:
    b = TensorRTBackend(ModelSettings(path=str(make_engine(tmp_path))), cuda=cuda)
    b.input_buffer(1)
    b.close()
    assert len(cuda.allocs) == 6 and all(m.freed for m in cuda.allocs)  # 3 device buffers per slot
    with pytest.raises(BackendError, match="closed"):
        b.submit(0, 1)


def test_inspector_overlaps_batches_and_gets_the_same_answers(tmp_path: Path, trt, cuda: RecordingCuda) -> None:
    engine = make_engine(tmp_path)
    settings = load_settings(model={"path": str(engine), "max_batch": 4}, decision={"pass_classes": ["a"]},
                             plc={"enabled": False, "mode": "free_run"}, zmq={"enabled": False},
                             archive={"enabled": False}, metrics={"enabled": False})
    rng = np.random.default_rng(5)
    frames = [(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), f"f{i}", None) for i in range(7)]
    results = []

    class Sink:
        def handle(self, r) -> None:
            results.append(r)

    with TensorRTBackend(settings.model, cuda=cuda) as b:
        src = MemorySource(frames).start()
        insp = Inspector(settings, b, src, sinks=[Sink()]).start()
        assert insp.finished.wait(10)
        insp.stop()
        expected = [b.infer(preprocess(f, b.spec)[None])[0] for f, _, _ in frames]
    assert [r.source_id for r in sorted(results, key=lambda r: r.seq)] == [f"f{i}" for i in range(7)]
    for r, want in zip(sorted(results, key=lambda r: r.seq), expected):
        np.testing.assert_allclose(r.probabilities, want, atol=1e-6)
    contexts = trt.deserialized[0].contexts
    assert len(contexts) == 2 and contexts[0].executions and contexts[1].executions  # both slots used
    assert insp.stats["batches"] == 7 and insp.stats["infer_errors"] == 0
