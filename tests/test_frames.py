"""Image files -> frames: formats, bit depths, alpha, channel order, corrupt/truncated files."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from edge.frames import IMAGE_EXTENSIONS, ImageError, decode_image, list_images, read_image, to_channel_order


def bgr_image(h: int = 24, w: int = 32) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 200  # blue
    img[..., 1] = np.arange(w, dtype=np.uint8)[None, :] * 4
    img[..., 2] = 30  # red
    return img


def write(path: Path, img: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), img)
    return path


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tiff"])
def test_lossless_colour_to_rgb_and_bgr(tmp_path, ext):
    img = bgr_image()
    p = write(tmp_path / f"c{ext}", img)
    rgb = read_image(p)
    assert rgb.dtype == np.uint8 and rgb.shape == (24, 32, 3)
    np.testing.assert_array_equal(rgb, img[..., ::-1])
    np.testing.assert_array_equal(read_image(p, channel_order="BGR"), img)


def test_gray_jpeg_stays_two_dimensional(tmp_path, val_dir):
    shared_jpeg = next((val_dir / "free").glob("*.jpg"))
    img = read_image(shared_jpeg)
    assert img.ndim == 2 and img.dtype == np.uint8
    np.testing.assert_array_equal(img, np.asarray(Image.open(shared_jpeg)))  # same decoder result as Pillow


def test_sixteen_bit_png_and_tiff(tmp_path):
    gray16 = (np.arange(20 * 30, dtype=np.uint32).reshape(20, 30) * 100).astype(np.uint16)
    for ext in (".png", ".tif"):
        img = read_image(write(tmp_path / f"g16{ext}", gray16))
        assert img.dtype == np.uint16 and img.shape == (20, 30)
        np.testing.assert_array_equal(img, gray16)
    col16 = np.dstack([gray16, gray16 // 2, gray16 // 3])  # BGR
    img = read_image(write(tmp_path / "c16.png", col16))
    assert img.dtype == np.uint16
    np.testing.assert_array_equal(img, col16[..., ::-1])


def test_alpha_kept_as_rgba(tmp_path):
    bgra = np.dstack([bgr_image(), np.full((24, 32), 128, np.uint8)])
    img = read_image(write(tmp_path / "a.png", bgra))
    assert img.shape == (24, 32, 4)
    np.testing.assert_array_equal(img, cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA))


def one_warning(caplog: pytest.LogCaptureFixture, path: Path) -> str:
    """The single WARNING logged since the last call; it names ``path``."""
    recs = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    caplog.clear()
    assert len(recs) == 1 and recs[0][:2] == ("edgeqc.frames", logging.WARNING), recs
    assert recs[0][2].startswith(f"{path}: "), recs
    return recs[0][2]


def test_truncated_files_give_none(tmp_path, val_dir, caplog):
    caplog.set_level(logging.WARNING)
    data = next((val_dir / "crack").glob("*.jpg")).read_bytes()
    for cut in (2, 100, len(data) // 2):  # 2 = only the end-of-image marker missing
        p = tmp_path / f"cut{cut}.jpg"
        p.write_bytes(data[:-cut])
        assert read_image(p) is None, cut
        assert "truncated" in one_warning(caplog, p)
    png = cv2.imencode(".png", bgr_image())[1].tobytes()
    (tmp_path / "cut.png").write_bytes(png[: len(png) - 20])
    assert read_image(tmp_path / "cut.png") is None
    one_warning(caplog, tmp_path / "cut.png")
    with pytest.raises(ImageError, match="truncated"):
        decode_image(tmp_path / "cut2.jpg")
    assert caplog.records == []  # decode_image raises, it does not log


def test_jpeg_with_trailing_bytes_after_eoi_is_accepted(tmp_path, val_dir):
    src = next((val_dir / "crack").glob("*.jpg"))
    p = tmp_path / "trailer.jpg"
    p.write_bytes(src.read_bytes() + b"CAMERA-TRAILER" * 4)
    np.testing.assert_array_equal(read_image(p), read_image(src))


def test_garbage_empty_and_missing_give_none(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8not a jpeg at all" * 10)
    (tmp_path / "empty.png").write_bytes(b"")
    assert read_image(tmp_path / "garbage.jpg") is None
    one_warning(caplog, tmp_path / "garbage.jpg")
    assert read_image(tmp_path / "empty.png") is None
    assert one_warning(caplog, tmp_path / "empty.png") == f"{tmp_path / 'empty.png'}: empty file"
    assert read_image(tmp_path / "missing.png") is None
    one_warning(caplog, tmp_path / "missing.png")
    with pytest.raises(ValueError, match="channel order"):
        read_image(tmp_path / "missing.png", channel_order="RGBA")


def test_unidentified_format_names_the_file_not_a_memory_address(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    (tmp_path / "notes.png").write_bytes(b"hello, not an image\n")  # no signature OpenCV knows -> Pillow
    (tmp_path / "noise.tif").write_bytes(bytes(range(7, 71)))
    for name in ("notes.png", "noise.tif"):
        p = tmp_path / name
        assert read_image(p) is None
        assert one_warning(caplog, p) == (f"{p}: unreadable image (cannot identify image file: "
                                          "not a format OpenCV or Pillow decodes)")
    with pytest.raises(ImageError) as exc:
        decode_image(tmp_path / "notes.png")
    assert "BytesIO" not in str(exc.value) and "0x" not in str(exc.value)


def test_to_channel_order():
    bgr = bgr_image()
    assert to_channel_order(bgr, "BGR") is bgr
    np.testing.assert_array_equal(to_channel_order(bgr, "RGB"), bgr[..., ::-1])
    gray = bgr[..., 1].copy()
    assert to_channel_order(gray, "RGB") is gray
    assert to_channel_order(gray[:, :, None], "RGB").shape == (24, 32)
    bgr16 = bgr.astype(np.uint16) * 257
    out16 = to_channel_order(bgr16, "RGB")
    assert out16.dtype == np.uint16 and out16[0, 0, 0] == 30 * 257
    with pytest.raises(ValueError, match="expected 'RGB' or 'BGR'"):
        to_channel_order(bgr, "rgb")
    with pytest.raises(ValueError, match="frame shape"):
        to_channel_order(np.zeros((2, 2, 2), np.uint8), "RGB")


def test_list_images_recursive_sorted_filtered(tmp_path):
    for rel in ("b/2.png", "b/10.JPG", "a/x.bmp", "a-b/y.tiff", "top.jpeg", "notes.txt", ".hidden/z.png",
                "a/.dot.png"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    got = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert got == ["a-b/y.tiff", "a/x.bmp", "b/10.JPG", "b/2.png", "top.jpeg"]
    assert {".jpg", ".png", ".bmp", ".tif", ".tiff"} <= IMAGE_EXTENSIONS
    with pytest.raises(NotADirectoryError):
        list_images(tmp_path / "nope")


def test_list_images_follows_symlinked_folders_once(tmp_path):
    """A replay/calibration folder made of links to class folders elsewhere: followed; a loop and a
    second link to the same folder do not repeat images."""
    store = tmp_path / "store"
    for rel in ("crack/1.png", "free/2.png", "free/3.png"):
        (store / rel).parent.mkdir(parents=True, exist_ok=True)
        (store / rel).write_bytes(b"x")
    line = tmp_path / "line"
    line.mkdir()
    (line / "crack").symlink_to(store / "crack")
    (line / "free").symlink_to(store / "free")
    (line / "zz-again").symlink_to(store / "free")  # the same real folder under a second name
    (line / "crack" / "loop").symlink_to(line)  # a link back up the tree (store/crack/loop -> line)
    got = [p.relative_to(line).as_posix() for p in list_images(line)]
    assert got == ["crack/1.png", "free/2.png", "free/3.png"]


def test_list_images_on_val(val_dir):
    files = list_images(val_dir)
    assert len(files) == 268
    assert files[0].relative_to(val_dir).parts[0] == "blowhole"
