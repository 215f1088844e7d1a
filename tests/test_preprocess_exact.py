"""The allocation-free preprocessing path is bit-exact: Pillow's pixels, NumPy float32's values."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from edge.model_spec import ModelSpec
from edge.preprocess import Fitter, PreprocessError, Preprocessor, fit_key, preprocess, tensor_key

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def spec(h: int, w: int, **kw) -> ModelSpec:
    return ModelSpec(labels=("ok", "bad"), input_size=(h, w), mean=MEAN, std=STD, **kw)


def numpy_conversion(img_hwc: np.ndarray, s: ModelSpec) -> np.ndarray:
    """The float32 formula with plain NumPy ops: pixel * (scale/std) + (-mean/std), CHW."""
    out = np.empty((3,) + img_hwc.shape[:2], np.float32)
    for c in range(3):
        a = np.float32(s.scale / s.std[c])
        b = np.float32(-s.mean[c] / s.std[c])
        np.multiply(img_hwc[:, :, c], a, out=out[c])
        np.add(out[c], b, out=out[c])
    return out


def pillow_reference(img: np.ndarray, h: int, w: int, s: ModelSpec) -> np.ndarray:
    ref = np.asarray(Image.fromarray(img[:, :, :3] if img.ndim == 3 else img).resize((w, h), Image.BILINEAR))
    if ref.ndim == 2:
        ref = np.dstack([ref] * 3)
    return numpy_conversion(ref, s)


@pytest.mark.parametrize("channels", [None, 3, 4])
def test_pillow_bilinear_bit_exact_over_random_sizes(channels: int | None) -> None:
    rng = np.random.default_rng(20 + (channels or 0))
    for _ in range(40):  # down- and upscaling, odd sizes, tiny images
        H, W = (int(v) for v in rng.integers(1, 400, 2))
        h, w = (int(v) for v in rng.integers(1, 240, 2))
        shape = (H, W) if channels is None else (H, W, channels)
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        s = spec(h, w, interpolation="pillow_bilinear")
        got = preprocess(img, s)
        want = pillow_reference(img, h, w, s)
        assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist(), (shape, (h, w))


def test_lookup_conversion_equals_numpy_float32_bits() -> None:
    img = np.arange(256, dtype=np.uint8).reshape(16, 16)
    img3 = np.dstack([img, img[::-1], img.T])
    s = spec(16, 16, scale=0.0123)
    np.testing.assert_array_equal(preprocess(img3, s), numpy_conversion(img3, s))
    np.testing.assert_array_equal(preprocess(img, s), numpy_conversion(np.dstack([img] * 3), s))


@pytest.mark.parametrize("shape", [(375, 265), (480, 640, 3), (300, 300, 4)])
def test_pillow_path_allocates_nothing_frame_sized(shape: tuple[int, ...]) -> None:
    s = spec(224, 224, interpolation="pillow_bilinear")
    frame = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    pre = Preprocessor(s, max_batch=2)
    pre.batch([frame, frame])  # warm-up: the per-thread buffers are made once
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(3):
            pre.batch([frame, frame])
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < 8 * 1024  # one 224x224 uint8 plane alone would be 50 kB
    assert current - base < 1024


@pytest.mark.parametrize("resize", ["stretch", "center_crop", "letterbox"])
@pytest.mark.parametrize("interpolation", ["pillow_bilinear", "area", "linear"])
def test_fitter_then_preprocess_equals_preprocess(resize: str, interpolation: str) -> None:
    rng = np.random.default_rng(7)
    s = spec(24, 20, resize=resize, interpolation=interpolation)
    fitter = Fitter(s)
    frames = [rng.integers(0, 256, (50, 37), dtype=np.uint8), rng.integers(0, 256, (31, 64, 3), dtype=np.uint8),
              rng.integers(0, 256, (40, 40, 4), dtype=np.uint8), rng.integers(0, 65536, (33, 21, 3), dtype=np.uint16)]
    fitted = [fitter(f) for f in frames]
    for f, fit in zip(frames, fitted):  # later calls did not overwrite earlier results
        assert fit.shape[:2] == (24, 20) and fit.dtype == f.dtype and fit.flags.c_contiguous
        assert preprocess(fit, s).view(np.uint32).tolist() == preprocess(f, s).view(np.uint32).tolist()
    assert fitter.key == fit_key(s) != fit_key(spec(24, 21, resize=resize, interpolation=interpolation))
    same = rng.integers(0, 256, (24, 20), dtype=np.uint8)
    if resize != "letterbox":  # (letterbox always composes onto its canvas)
        assert fitter(same) is same  # already at the input size: no copy
    np.testing.assert_array_equal(fitter(same), same)


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_tensor_fitter_equals_preprocess_and_batch_copies_it(resize: str) -> None:
    rng = np.random.default_rng(11)
    s = spec(24, 20, resize=resize)
    make = Fitter(s, tensor=True)
    frames = [rng.integers(0, 256, (50, 37), dtype=np.uint8), rng.integers(0, 256, (31, 64, 3), dtype=np.uint8),
              rng.integers(0, 65536, (33, 21, 3), dtype=np.uint16)]
    tensors = [make(f) for f in frames]
    for f, t in zip(frames, tensors):  # a new array each: later calls did not overwrite earlier ones
        assert t.shape == (3, 24, 20) and t.dtype == np.float32
        assert t.view(np.uint32).tolist() == preprocess(f, s).view(np.uint32).tolist()
    pre = Preprocessor(s, 3)
    from_frames = pre.batch(frames).copy()
    assert pre.batch(tensors).view(np.uint32).tolist() == from_frames.view(np.uint32).tolist()
    mixed = pre.batch([tensors[0], frames[1], Fitter(s)(frames[2])])  # tensor, raw frame, fitted image
    assert mixed.view(np.uint32).tolist() == from_frames.view(np.uint32).tolist()
    assert make.key == tensor_key(s) != fit_key(s)
    assert tensor_key(s) != tensor_key(replace(s, mean=(0.5, 0.5, 0.5)))
    with pytest.raises(PreprocessError, match=r"frame 0: prepared tensor is float32 \(3, 24, 21\)"):
        pre.batch([np.zeros((3, 24, 21), np.float32)])
