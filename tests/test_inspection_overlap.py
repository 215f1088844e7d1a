"""The inspection loop's slots with the ONNX Runtime worker (two batches in flight), on a tiny
real ONNX model: a failed batch must not hand the next one a slot that is still running."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_models import make_classifier

from edge.backends.onnxruntime import OnnxRuntimeBackend
from edge.inspection import _Slots
from edge.preprocess import PreprocessError, Preprocessor
from edge.settings import ModelSettings

FIVE = ["a", "b", "c", "d", "e"]


@pytest.fixture
def backend(tmp_path):
    path = make_classifier(tmp_path / "tiny.onnx")
    settings = ModelSettings(path=str(path), labels=FIVE, input_size=(8, 8), max_batch=2, intra_op_threads=1,
                             interpolation="nearest")
    with OnnxRuntimeBackend(settings) as be:
        yield be


def frames(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(n)]


def reference(backend: OnnxRuntimeBackend, imgs: list[np.ndarray]) -> np.ndarray:
    return backend.infer(Preprocessor(backend.spec, len(imgs)).batch(imgs))


def test_two_batches_in_flight_give_their_own_probabilities(backend) -> None:
    slots = _Slots(backend)
    assert slots.asynchronous and slots.depth == 2 and slots.inline_ok
    a, b = frames(1, 2), frames(2, 1)
    pa, _ = slots.submit(a)
    pb, _ = slots.submit(b)
    np.testing.assert_array_equal(pa.wait(), reference(backend, a))
    np.testing.assert_array_equal(pb.wait(), reference(backend, b))
    pc, _ = slots.submit(frames(3, 1), inline=True)  # a lone batch: run inline, already done
    assert type(pc).__name__ == "_Done"
    np.testing.assert_array_equal(pc.wait(), reference(backend, frames(3, 1)))
    assert pc.wait().shape == (1, 5) and np.allclose(pc.wait().sum(axis=1), 1.0)


def test_failed_batch_leaves_its_slot_free(backend) -> None:
    """A in flight in slot 0; B fails preprocessing (bad frame) in slot 1; C must take slot 1, not
    overwrite slot 0 while A still runs there."""
    slots = _Slots(backend)
    a, c = frames(4, 2), frames(5, 2)
    pa, _ = slots.submit(a)
    with pytest.raises(PreprocessError):
        slots.submit([np.zeros((8, 8, 3), np.float64)])  # float64 frame: refused
    pc, _ = slots.submit(c)  # would raise "slot 0 still has a batch in flight" with the old rotation
    np.testing.assert_array_equal(pa.wait(), reference(backend, a))
    np.testing.assert_array_equal(pc.wait(), reference(backend, c))


def test_lone_prepared_tensor_runs_without_a_copy(backend) -> None:
    """A lone frame already made into the model tensor by the capture thread is run as is (inline);
    a pair of them is copied into a slot; both give the reference probabilities."""
    from edge.preprocess import Fitter

    slots = _Slots(backend)
    make = Fitter(backend.spec, tensor=True)
    imgs = frames(6, 2)
    tensors = [make(f) for f in imgs]
    view = slots._ready_tensor(tensors[:1])
    assert view is not None and view.shape == (1, 3, 8, 8) and np.shares_memory(view, tensors[0])
    p1, _ = slots.submit(tensors[:1], inline=True)
    np.testing.assert_array_equal(p1.wait(), reference(backend, imgs[:1]))
    p2, _ = slots.submit(tensors)  # two: through the slot buffer, in flight
    np.testing.assert_array_equal(p2.wait(), reference(backend, imgs))
    assert slots._ready_tensor([np.zeros((3, 8, 9), np.float32)]) is None  # not this model's input
