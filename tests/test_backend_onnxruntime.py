"""ONNX Runtime backend: the shared models reproduce their cards; tiny models check the mechanics."""

from __future__ import annotations

import hashlib

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from tiny_models import expected_logits, make_classifier

from edge.backends import Backend, BackendError, BackendInputError, open_backend, softmax
from edge.backends.noop import NoopBackend
from edge.backends.onnxruntime import OnnxRuntimeBackend
from edge.frames import list_images, read_image
from edge.model_spec import resolve_spec
from edge.preprocess import Preprocessor
from edge.settings import ModelSettings

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FIVE = ["a", "b", "c", "d", "e"]
# Measured with tools/measure_interpolation.py (docs/preprocessing.md); equal to the model cards.
EFFNET_CONFUSION = [[22, 0, 0, 0, 1, 0], [0, 11, 1, 0, 5, 0], [0, 0, 11, 0, 0, 0],
                    [0, 1, 0, 5, 0, 0], [0, 4, 0, 0, 184, 2], [0, 0, 0, 0, 0, 21]]
YOLO_CONFUSION = [[6, 0, 1, 0, 15, 1], [0, 2, 1, 0, 12, 2], [0, 0, 8, 0, 2, 1],
                  [0, 0, 0, 3, 2, 1], [0, 17, 5, 3, 161, 4], [0, 0, 0, 0, 12, 9]]


@pytest.fixture(scope="module")
def val_set(val_dir):
    files = list_images(val_dir)
    frames = [read_image(p) for p in files]
    assert len(files) == 268 and all(f is not None for f in frames)
    classes = sorted(p.name for p in val_dir.iterdir() if p.is_dir())
    truth = np.array([classes.index(p.relative_to(val_dir).parts[0]) for p in files])
    return files, frames, truth


def run_val(backend: Backend, frames, direct_session=None):
    """All val frames through Preprocessor + backend in batches of 32; optionally the same
    tensors through a plain InferenceSession."""
    pre = Preprocessor(backend.spec, 32)
    probs, direct, tensors = [], [], []
    for i in range(0, len(frames), 32):
        x = pre.batch(frames[i:i + 32])
        probs.append(backend.infer(x))
        tensors.append(x.copy())
        if direct_session is not None:
            direct.append(direct_session.run([backend.spec.output_name], {backend.spec.input_name: x})[0])
    return np.concatenate(probs), (np.concatenate(direct) if direct else None), np.concatenate(tensors)


def confusion(truth, pred, c=6):
    cm = np.zeros((c, c), int)
    np.add.at(cm, (truth, pred), 1)
    return cm.tolist()


def test_effnet_reproduces_model_card(effnet_path, val_set):
    files, frames, truth = val_set
    settings = ModelSettings(path=str(effnet_path), mean=IMAGENET_MEAN, std=IMAGENET_STD, max_batch=32)
    session = ort.InferenceSession(str(effnet_path), providers=["CPUExecutionProvider"])
    with open_backend(settings) as backend:
        assert isinstance(backend, OnnxRuntimeBackend) and backend.spec.interpolation == "pillow_bilinear"
        probs, logits, tensors = run_val(backend, frames, session)
    assert probs.dtype == np.float32 and probs.shape == (268, 6) and probs.flags.c_contiguous
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    pred = probs.argmax(axis=1)
    # Same label as a direct InferenceSession on the same tensor, for every image.
    np.testing.assert_array_equal(pred, logits.argmax(axis=1))
    np.testing.assert_allclose(probs, softmax(logits), atol=1e-6)
    # The card's figures: 254/268 top-1, 6/78 escapes, 6/190 false rejects, its confusion matrix.
    assert int((pred == truth).sum()) == 254
    free = 4
    assert int(((pred == free) & (truth != free)).sum()) == 6
    assert int(((pred != free) & (truth == free)).sum()) == 6
    assert confusion(truth, pred) == EFFNET_CONFUSION
    # The input tensors equal the card's Pillow code (decode with PIL, resize, normalise).
    for i in range(0, 268, 29):
        ref = np.asarray(Image.open(files[i]).convert("RGB").resize((224, 224), Image.BILINEAR), np.float32) / 255.0
        ref = ((ref - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)).transpose(2, 0, 1)
        np.testing.assert_allclose(tensors[i], ref, atol=1e-5)


def test_yolo_reproduces_model_card(yolo_path, val_set):
    _, frames, truth = val_set
    with open_backend(ModelSettings(path=str(yolo_path), max_batch=32)) as backend:
        assert backend.spec.output == "probabilities" and backend.spec.resize == "center_crop"
        probs, _, _ = run_val(backend, frames)
    pred = probs.argmax(axis=1)
    assert int((pred == truth).sum()) == 189
    assert confusion(truth, pred) == YOLO_CONFUSION


def test_logits_become_probabilities_in_chunks(tmp_path):
    model = make_classifier(tmp_path / "m.onnx", classes=5)
    x = np.random.default_rng(0).normal(size=(5, 3, 8, 8)).astype(np.float32)
    with OnnxRuntimeBackend(ModelSettings(path=str(model), labels=FIVE, max_batch=2)) as b:
        assert (b.name, b.precision, b.max_batch) == ("onnxruntime", "fp32", 2)
        assert b.model_hash == hashlib.sha256(model.read_bytes()).hexdigest()
        probs = b.infer(x)
    assert probs.shape == (5, 5) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, softmax(expected_logits(x, 5)), atol=1e-6)


def test_fixed_batch_model_is_split_and_padded(tmp_path):
    model = make_classifier(tmp_path / "m.onnx", classes=5, batch=4)
    x = np.random.default_rng(1).normal(size=(6, 3, 8, 8)).astype(np.float32)
    with OnnxRuntimeBackend(ModelSettings(path=str(model), labels=FIVE, max_batch=16)) as b:
        assert b.max_batch == 4 and b.spec.dynamic_batch is False
        probs = b.infer(x)
        one = b.infer(x[:1])
    np.testing.assert_allclose(probs, softmax(expected_logits(x, 5)), atol=1e-6)
    np.testing.assert_allclose(one, probs[:1], atol=1e-7)


def test_softmax_model_output_passed_through(tmp_path):
    model = make_classifier(tmp_path / "m.onnx", classes=5, softmax=True, output_name="prob")
    x = np.random.default_rng(2).normal(size=(3, 3, 8, 8)).astype(np.float32)
    with open_backend(ModelSettings(path=str(model), labels=FIVE)) as b:
        assert b.spec.output == "probabilities"
        np.testing.assert_allclose(b.infer(x), softmax(expected_logits(x, 5)), atol=1e-6)


def test_qdq_model_reports_int8(tmp_path):
    model = make_classifier(tmp_path / "m.onnx", qdq=True)
    with open_backend(ModelSettings(path=str(model), labels=FIVE)) as b:
        assert b.precision == "int8"


def test_input_validation(tmp_path):
    model = make_classifier(tmp_path / "m.onnx")
    b = open_backend(ModelSettings(path=str(model), labels=FIVE))
    good = np.zeros((2, 3, 8, 8), np.float32)
    with pytest.raises(BackendInputError, match=r"dtype float64, expected \[N,3,8,8\] float32"):
        b.infer(good.astype(np.float64))
    with pytest.raises(BackendInputError, match=r"shape \[2, 3, 8, 9\]"):
        b.infer(np.zeros((2, 3, 8, 9), np.float32))
    with pytest.raises(BackendInputError, match="not C-contiguous"):
        b.infer(np.zeros((2, 3, 8, 16), np.float32)[..., ::2])
    with pytest.raises(BackendInputError, match="input is list"):
        b.infer([[0.0]])  # type: ignore[arg-type]
    assert b.infer(good[:0]).shape == (0, 5)
    b.close()
    b.close()  # idempotent
    with pytest.raises(BackendError, match="closed"):
        b.infer(good)


def test_softmax_is_stable():
    p = softmax(np.array([[1000.0, 0.0, -1000.0], [-1e30, -1e30, -1e30]], np.float32))
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-7)


def test_noop_backend(tmp_path):
    model = make_classifier(tmp_path / "m.onnx")
    with open_backend(ModelSettings(path=str(model), labels=FIVE, backend="noop")) as b:
        assert isinstance(b, NoopBackend) and b.name == "noop"
        out = b.infer(np.zeros((3, 3, 8, 8), np.float32))
    assert out.shape == (3, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out, 0.2)
    spec = resolve_spec(model, ModelSettings(labels=FIVE))
    fixed = NoopBackend(spec, [0, 0, 0, 1, 0]).infer(np.zeros((2, 3, 8, 8), np.float32))
    assert fixed.argmax(axis=1).tolist() == [3, 3]
    with pytest.raises(BackendInputError, match="summing to 1"):
        NoopBackend(spec, [0.5, 0.5, 0.5, 0, 0])


def test_missing_model(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_backend(ModelSettings(path=str(tmp_path / "nope.onnx"), labels=FIVE))


# --------------------------------------------------------------------------- overlap (worker thread)
def _tiny_backend(tmp_path, batch: int | str = "N", max_batch: int = 4) -> OnnxRuntimeBackend:
    path = make_classifier(tmp_path / "tiny.onnx", batch=batch)
    settings = ModelSettings(path=str(path), labels=FIVE, input_size=(8, 8), max_batch=max_batch,
                             intra_op_threads=1)
    return OnnxRuntimeBackend(settings)


@pytest.mark.parametrize("batch", ["N", 4])
def test_submit_in_two_slots_equals_infer(tmp_path, batch) -> None:
    """Two batches in flight through the worker give what infer() gives for the same rows."""
    rng = np.random.default_rng(7)
    with _tiny_backend(tmp_path, batch=batch) as be:
        assert be.inflight_slots == 2 and be.inline_when_idle
        x0 = rng.standard_normal((3, 3, 8, 8), dtype=np.float32)
        x1 = rng.standard_normal((4, 3, 8, 8), dtype=np.float32)
        be.input_buffer(0)[:3] = x0
        be.input_buffer(1)[:4] = x1
        p0, p1 = be.submit(0, 3), be.submit(1, 4)
        got1, got0 = p1.wait(), p0.wait()  # waited out of order on purpose
        np.testing.assert_array_equal(got0, be.infer(x0))
        np.testing.assert_array_equal(got1, be.infer(x1))
        assert got0.shape == (3, 5) and got1.shape == (4, 5)
        np.testing.assert_allclose(got0, softmax(expected_logits(x0, 5).astype(np.float32)), rtol=1e-5, atol=1e-6)
        assert p0.wait() is got0  # wait() again: the same result, no second run
        be.input_buffer(0)[:1] = x1[:1]  # the slot is free again after its wait()
        np.testing.assert_array_equal(be.submit(0, 1).wait(), be.infer(x1[:1]))


def test_submit_errors_name_the_problem(tmp_path) -> None:
    be = _tiny_backend(tmp_path)
    with pytest.raises(BackendError, match="slot 2 out of range"):
        be.input_buffer(2)
    with pytest.raises(BackendError, match=r"submit of 5 rows, expected 1..4"):
        be.submit(0, 5)
    pending = be.submit(1, 1)
    with pytest.raises(BackendError, match="slot 1 still has a batch in flight"):
        be.submit(1, 1)
    assert pending.wait().shape == (1, 5)
    be.close()
    assert be._worker is None  # the worker thread was stopped and joined
    with pytest.raises(BackendError, match="is closed"):
        be.submit(0, 1)
    be.close()  # idempotent


def test_worker_error_reaches_the_waiting_caller(tmp_path) -> None:
    """An exception inside the worker is raised by wait(); the worker keeps serving."""
    with _tiny_backend(tmp_path) as be:
        real = be._session  # the run itself fails (as if ONNX Runtime raised):
        be._session = None  # type: ignore[assignment]
        with pytest.raises(BackendError, match="closed"):
            be.submit(0, 1).wait()
        be._session = real
        be.input_buffer(0)[:1] = 0.0
        assert be.submit(0, 1).wait().shape == (1, 5)


def test_wait_after_an_error_raises_it_again(tmp_path) -> None:
    with _tiny_backend(tmp_path) as be:
        real, be._session = be._session, None  # type: ignore[assignment]
        pending = be.submit(1, 1)
        with pytest.raises(BackendError) as first:
            pending.wait()
        with pytest.raises(BackendError) as second:  # at once, not blocking on an empty queue
            pending.wait()
        assert second.value is first.value
        be._session = real


def test_close_finishes_the_batches_already_submitted(tmp_path) -> None:
    x = np.full((2, 3, 8, 8), 0.25, np.float32)
    be = _tiny_backend(tmp_path)
    expected = be.infer(x)
    be.input_buffer(0)[:2] = x
    pending = be.submit(0, 2)
    be.close()  # the worker runs what was queued before it stops; then the session goes
    np.testing.assert_array_equal(pending.wait(), expected)
    with pytest.raises(BackendError, match="is closed"):
        be.infer(x)


@pytest.mark.parametrize(("cpus", "threads"), [(1, 1), (2, 1), (3, 2), (5, 4), (16, 4)])
def test_auto_intra_op_threads_leave_a_core(cpus, threads) -> None:
    from edge.backends.onnxruntime import default_intra_op_threads

    assert default_intra_op_threads(cpus) == threads


def test_zero_threads_means_auto(tmp_path, monkeypatch) -> None:
    import os

    from edge.backends import onnxruntime as ortb
    from edge.backends.onnxruntime import default_intra_op_threads

    path = make_classifier(tmp_path / "tiny.onnx")
    with OnnxRuntimeBackend(ModelSettings(path=str(path), labels=FIVE, input_size=(8, 8))) as be:
        assert be.intra_op_threads == default_intra_op_threads(len(os.sched_getaffinity(0)))
    monkeypatch.setattr(ortb, "usable_cpus", lambda: 8)  # a set number within the CPUs is kept as is
    with OnnxRuntimeBackend(ModelSettings(path=str(path), labels=FIVE, input_size=(8, 8), intra_op_threads=3)) as be:
        assert be.intra_op_threads == 3


def test_threads_above_the_cpu_count_are_lowered_with_one_warning(monkeypatch, caplog) -> None:
    import logging

    from edge.backends import onnxruntime as ortb

    monkeypatch.setattr(ortb, "usable_cpus", lambda: 2)
    monkeypatch.setattr(ortb, "_warned_threads", set())
    with caplog.at_level(logging.WARNING, logger="edgeqc.backends.onnxruntime"):
        assert ortb.intra_op_threads(2) == 2
        assert not caplog.records
        assert ortb.intra_op_threads(8) == 2  # lowered to the CPU count
        assert ortb.intra_op_threads(8) == 2  # the same number again: no second line
    assert len(caplog.records) == 1
    assert "model.intra_op_threads = 8 is more than the 2 CPUs this process may use: using 2" in caplog.records[0].getMessage()
    assert "0 = auto: 1 here" in caplog.records[0].getMessage()
