"""Optimization profile choice from the ONNX input shapes (pure, no TensorRT)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trt_build.profile import InputShape, ProfileError, choose_profile, onnx_input_shapes


def test_dynamic_batch_gets_min_1_opt_max_from_flags() -> None:
    (p,) = choose_profile([InputShape("input", ("N", 3, 224, 224))], opt_batch=2, max_batch=16)
    assert (p.name, p.min, p.opt, p.max) == ("input", (1, 3, 224, 224), (2, 3, 224, 224), (16, 3, 224, 224))
    (p,) = choose_profile([InputShape("input", (None, 3, 224, 224))])
    assert p.opt == (1, 3, 224, 224) and p.max == (8, 3, 224, 224)  # defaults: opt 1, max 8


def test_fixed_shapes_need_no_profile_and_cannot_grow() -> None:
    assert choose_profile([InputShape("input", (1, 3, 224, 224))]) == []
    assert choose_profile([InputShape("input", (4, 3, 224, 224))], max_batch=4) == []
    with pytest.raises(ProfileError, match=r"input 'input' has a fixed batch of 1 \(\[1,3,224,224\]\); --max-batch 8 "
                                           r"needs a model exported with a dynamic batch axis"):
        choose_profile([InputShape("input", (1, 3, 224, 224))], max_batch=8)


def test_dynamic_height_width_come_from_the_spec() -> None:
    """Ultralytics exports (dynamic=True) make batch, height and width dynamic."""
    (p,) = choose_profile([InputShape("images", ("batch", 3, "height", "width"))], max_batch=4, input_hw=(224, 256))
    assert p.min == (1, 3, 224, 256) and p.opt == (1, 3, 224, 256) and p.max == (4, 3, 224, 256)
    (p,) = choose_profile([InputShape("images", (1, "c", 64, 64))])
    assert p.min == p.max == (1, 3, 64, 64)
    with pytest.raises(ProfileError, match=r"input 'images' \[batch,3,height,width\]: axis 2 \('height'\) is dynamic"):
        choose_profile([InputShape("images", ("batch", 3, "height", "width"))])


def test_batch_flags_validated() -> None:
    with pytest.raises(ProfileError, match=r"1 <= opt \(9\) <= max \(8\)"):
        choose_profile([InputShape("x", ("N", 3, 8, 8))], opt_batch=9)
    with pytest.raises(ProfileError, match=r"1 <= opt \(0\) <= max \(8\)"):
        choose_profile([InputShape("x", ("N", 3, 8, 8))], opt_batch=0)


def test_shapes_read_from_onnx(tmp_path: Path) -> None:
    from qdq_models import make_convnet

    p = make_convnet(tmp_path / "m.onnx")
    assert onnx_input_shapes(str(p)) == [InputShape("input", ("N", 3, 16, 16))]


def test_shared_models(effnet_path: Path, yolo_path: Path) -> None:
    (e,) = choose_profile(onnx_input_shapes(str(effnet_path)), max_batch=8)
    assert e.min == (1, 3, 224, 224) and e.max == (8, 3, 224, 224)
    (y,) = choose_profile(onnx_input_shapes(str(yolo_path)), max_batch=8, input_hw=(224, 224))
    assert y.name == "images" and y.opt == (1, 3, 224, 224)
