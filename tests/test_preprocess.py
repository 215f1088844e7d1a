"""The one preprocessing: exact values vs independent numpy/Pillow/OpenCV computations."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
from PIL import Image

from edge.model_spec import ModelSpec
from edge.preprocess import PAD_VALUE, Geometry, PreprocessError, Preprocessor, plan_geometry, preprocess

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
LABELS = ("ok", "bad")


def spec(h: int = 4, w: int = 6, **kw) -> ModelSpec:
    return ModelSpec(labels=LABELS, input_size=(h, w), **kw)


def reference(img_hwc: np.ndarray, full_scale: float, mean=(0, 0, 0), std=(1, 1, 1)) -> np.ndarray:
    """Independent float64 formula: (x / full_scale - mean) / std, HWC -> CHW."""
    x = img_hwc.astype(np.float64) / full_scale
    x = (x - np.array(mean)) / np.array(std)
    return x.transpose(2, 0, 1)


def rng_image(shape, dtype=np.uint8, seed=0) -> np.ndarray:
    hi = 256 if dtype == np.uint8 else 65536
    return np.random.default_rng(seed).integers(0, hi, size=shape, dtype=np.int64).astype(dtype)


def test_color_uint8_no_resize_exact():
    img = rng_image((4, 6, 3))
    out = preprocess(img, spec(mean=MEAN, std=STD))
    assert out.shape == (3, 4, 6) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference(img, 255.0, MEAN, STD), rtol=0, atol=2e-6)


def test_gray_is_replicated_to_three_channels():
    gray = rng_image((4, 6), seed=1)
    out = preprocess(gray, spec(mean=MEAN, std=STD))
    np.testing.assert_allclose(out, reference(np.dstack([gray] * 3), 255.0, MEAN, STD), atol=2e-6)
    np.testing.assert_array_equal(preprocess(gray[:, :, None], spec(mean=MEAN, std=STD)), out)  # HxWx1


def test_sixteen_bit_uses_full_16_bit_range():
    img = rng_image((4, 6, 3), np.uint16, seed=2)
    out = preprocess(img, spec(mean=MEAN, std=STD))
    np.testing.assert_allclose(out, reference(img, 65535.0, MEAN, STD), atol=3e-6)
    # 8-bit value v and 16-bit value v*257 are the same brightness -> same input
    img8 = rng_image((4, 6, 3), seed=3)
    np.testing.assert_allclose(preprocess(img8.astype(np.uint16) * 257, spec()), preprocess(img8, spec()), atol=1e-6)


def test_alpha_is_dropped():
    rgb = rng_image((4, 6, 3), seed=4)
    rgba = np.dstack([rgb, np.full((4, 6), 7, np.uint8)])
    np.testing.assert_array_equal(preprocess(rgba, spec()), preprocess(rgb, spec()))
    rgba16 = np.dstack([rgb.astype(np.uint16) * 257, np.zeros((4, 6), np.uint16)])
    np.testing.assert_allclose(preprocess(rgba16, spec()), preprocess(rgb, spec()), atol=1e-6)


def test_scale_is_applied_before_mean_std():
    img = np.full((4, 6, 3), 100, np.uint8)
    out = preprocess(img, spec(scale=0.01, mean=(0.5, 0.5, 0.5), std=(2.0, 4.0, 5.0)))
    assert out[:, 0, 0].tolist() == pytest.approx([0.25, 0.125, 0.1])


def test_channel_order_is_not_changed_by_preprocess():
    img = np.zeros((4, 6, 3), np.uint8)
    img[..., 0] = 255
    out = preprocess(img, spec(channel_order="BGR"))
    assert out[0].min() == 1.0 and out[1].max() == 0.0 and out[2].max() == 0.0


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_stretch_pillow_bilinear_equals_pillow(dtype):
    img = rng_image((37, 53, 3) if dtype == np.uint8 else (37, 53), dtype, seed=5)
    out = preprocess(img, spec(16, 20, interpolation="pillow_bilinear"))
    ref = np.asarray(Image.fromarray(img).resize((20, 16), Image.BILINEAR))
    if ref.ndim == 2:
        ref = np.dstack([ref] * 3)
    np.testing.assert_allclose(out, reference(ref, 255.0 if dtype == np.uint8 else 65535.0), atol=2e-6)


def test_sixteen_bit_colour_pillow_per_channel():
    img = rng_image((21, 30, 3), np.uint16, seed=6)
    out = preprocess(img, spec(10, 12))
    ref = np.dstack([np.asarray(Image.fromarray(np.ascontiguousarray(img[:, :, c])).resize((12, 10), Image.BILINEAR))
                     for c in range(3)])
    np.testing.assert_allclose(out, reference(ref, 65535.0), atol=3e-6)


@pytest.mark.parametrize("name,flag", [("area", cv2.INTER_AREA), ("linear", cv2.INTER_LINEAR),
                                       ("nearest", cv2.INTER_NEAREST), ("cubic", cv2.INTER_CUBIC)])
def test_stretch_opencv_interpolations(name, flag):
    img = rng_image((40, 50, 3), seed=7)
    out = preprocess(img, spec(16, 20, interpolation=name))
    ref = cv2.resize(img, (20, 16), interpolation=flag)
    np.testing.assert_allclose(out, reference(ref, 255.0), atol=2e-6)


def test_center_crop_geometry_torchvision_numbers():
    # Resize(224) on a 265x375 (HxW) image -> 224 x int(224*375/265) = 224x316; crop x = round(92/2) = 46
    s = spec(224, 224, resize="center_crop")
    assert plan_geometry(265, 375, s) == Geometry(224, 316, crop_y=0, crop_x=46)
    assert plan_geometry(375, 265, s) == Geometry(316, 224, crop_y=46, crop_x=0)
    assert plan_geometry(224, 224, s) == Geometry(224, 224)
    # odd margin: torchvision uses Python round (half to even): (227-224)/2 = 1.5 -> 2
    assert plan_geometry(224, 227, s).crop_x == 2
    # non-square target: the image must cover 4x8; height binds for 10x12 -> 4 x int(12*4/10)=4 -> width binds
    assert plan_geometry(10, 12, spec(4, 8, resize="center_crop")) == Geometry(6, 8, crop_y=1, crop_x=0)


def test_center_crop_values():
    img = rng_image((12, 20, 3), seed=8)
    out = preprocess(img, spec(6, 6, resize="center_crop", interpolation="nearest"))
    resized = cv2.resize(img, (10, 6), interpolation=cv2.INTER_NEAREST)  # 6 x int(6*20/12)=10
    np.testing.assert_allclose(out, reference(resized[:, 2:8], 255.0), atol=2e-6)


def test_letterbox_geometry_and_pad():
    s = spec(8, 8, resize="letterbox", interpolation="nearest")
    assert plan_geometry(8, 16, s) == Geometry(4, 8, pad_top=2, pad_left=0)
    assert plan_geometry(30, 10, s) == Geometry(8, 3, pad_top=0, pad_left=2)  # round(10*8/30)=3, (8-3)//2
    img = rng_image((8, 16, 3), seed=9)
    out = preprocess(img, s)
    pad = PAD_VALUE / 255.0

    def is_pad(region: np.ndarray, value: float = pad) -> bool:
        return bool(np.allclose(region, value, rtol=0, atol=1e-6))

    assert is_pad(out[:, :2, :]) and is_pad(out[:, 6:, :])
    inner = cv2.resize(img, (8, 4), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_allclose(out[:, 2:6, :], reference(inner, 255.0), atol=2e-6)
    # a later frame of another size must not see the previous frame's pixels in its border
    out2 = preprocess(rng_image((30, 10, 3), seed=10), s)
    assert is_pad(out2[:, :, :2]) and is_pad(out2[:, :, 5:]) and not is_pad(out2[:, :, 2:5])
    out16 = preprocess(img.astype(np.uint16) * 257, s)
    assert is_pad(out16[:, :2, :], PAD_VALUE * 257 / 65535.0)


def test_out_buffer_and_errors():
    s = spec()
    buf = np.zeros((3, 4, 6), np.float32)
    assert preprocess(rng_image((4, 6, 3)), s, out=buf) is buf
    with pytest.raises(PreprocessError, match=r"out buffer .* expected float32 \(3, 4, 6\)"):
        preprocess(rng_image((4, 6, 3)), s, out=np.zeros((3, 6, 4), np.float32))
    with pytest.raises(PreprocessError, match="dtype float32, expected uint8 or uint16"):
        preprocess(np.zeros((4, 6, 3), np.float32), s)
    with pytest.raises(PreprocessError, match=r"shape \(4, 6, 2\)"):
        preprocess(np.zeros((4, 6, 2), np.uint8), s)
    with pytest.raises(PreprocessError, match="empty"):
        preprocess(np.zeros((0, 6, 3), np.uint8), s)


def test_preprocessor_batch_is_a_view_of_its_buffer():
    s = spec(8, 8, mean=MEAN, std=STD)
    pre = Preprocessor(s, max_batch=4)
    frames = [rng_image((10, 12, 3), seed=i) for i in range(3)]
    out = pre.batch(frames)
    assert out.shape == (3, 3, 8, 8) and out.flags.c_contiguous and np.shares_memory(out, pre.buffer)
    for i, f in enumerate(frames):
        np.testing.assert_array_equal(out[i], preprocess(f, s))
    assert pre.one(frames[1]).shape == (1, 3, 8, 8)
    with pytest.raises(PreprocessError, match="5 frames.*max_batch = 4"):
        pre.batch(frames + frames[:2])
    with pytest.raises(PreprocessError, match="frame 1: frame dtype"):
        pre.batch([frames[0], np.zeros((8, 8), np.int16)])


def test_no_frame_sized_allocation_in_steady_state():
    """OpenCV paths resize into cached buffers and convert into ``out``."""
    s = spec(224, 224, interpolation="area", mean=MEAN, std=STD)
    frame = rng_image((480, 640, 3), seed=11)
    buf = np.empty((3, 224, 224), np.float32)
    preprocess(frame, s, out=buf)  # warm-up: allocates the cached resize buffer
    tracemalloc.start()
    try:
        preprocess(frame, s, out=buf)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024  # a 224x224x3 uint8 buffer alone would be 150 kB
