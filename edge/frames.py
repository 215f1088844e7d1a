"""Image files -> frames, and the ONE channel-order conversion at the capture boundary.

A *frame* is a numpy array ``[H,W]`` (gray), ``[H,W,3]`` or ``[H,W,4]`` (colour, + alpha), dtype
``uint8`` or ``uint16``, in the model's channel order (RGB or BGR, see :func:`to_channel_order`).
Gray frames stay 2-D; :mod:`edge.preprocess` replicates them to 3 channels.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger("edgeqc.frames")

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
"""Suffixes (lower case) that :func:`list_images` picks up and :func:`read_image` decodes."""

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
# Signatures OpenCV decodes itself: if it fails on these, the file is corrupt (no Pillow retry).
_OPENCV_SIGNATURES = (_JPEG_SOI, b"\x89PNG", b"BM", b"II*\x00", b"MM\x00*")
_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9A-Fa-f]+>")  # "<_io.BytesIO object at 0x7f…>" in Pillow's messages


class ImageError(ValueError):
    """An image file cannot be used as a frame; the message is ``"<path>: <why>"``."""


def to_channel_order(img: np.ndarray, order: str) -> np.ndarray:
    """Convert an OpenCV frame (gray, BGR or BGRA) to the model's channel ``order``.

    This is the only channel conversion in edgeqc; it happens once, where frames enter
    (capture, :func:`read_image`).

    Args:
        img: ``[H,W]``, ``[H,W,1]``, ``[H,W,3]`` (BGR) or ``[H,W,4]`` (BGRA), uint8 or uint16.
        order: ``"RGB"`` or ``"BGR"``.

    Returns:
        ``[H,W]`` for gray input (``[H,W,1]`` becomes a 2-D view), else ``[H,W,3|4]`` in
        ``order`` (alpha kept last; :func:`edge.preprocess.preprocess` drops it). Same dtype.
        For ``order="BGR"`` the input array itself is returned (no copy).

    Raises:
        ValueError: unknown ``order`` or an unsupported shape.
    """
    if order not in ("RGB", "BGR"):
        raise ValueError(f"channel order {order!r}, expected 'RGB' or 'BGR'")
    if img.ndim == 2:
        return img
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ValueError(f"frame shape {img.shape}, expected [H,W], [H,W,1], [H,W,3] or [H,W,4]")
    if img.shape[2] == 1:
        return img[:, :, 0]
    if order == "BGR":
        return img
    code = cv2.COLOR_BGR2RGB if img.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
    return cv2.cvtColor(img, code)


def _jpeg_complete(data: np.ndarray) -> bool:
    """A JPEG ends with the EOI marker FFD9 (trailing zero padding tolerated)."""
    tail = bytes(data[-256:]).rstrip(b"\x00")
    return tail.endswith(_JPEG_EOI)


def _pillow_decode(data: bytes, path: Path) -> np.ndarray:
    """Full decode with Pillow (LOAD_TRUNCATED_IMAGES off: truncated data raises). Returns an
    OpenCV-style array (gray, BGR, BGRA; uint8 or uint16); raises :class:`ImageError`."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode = im.mode
            if mode in ("L", "RGB", "RGBA", "I;16", "I;16B", "I;16L"):
                arr = np.asarray(im)
            elif mode == "I" and im.getextrema()[1] <= 65535 and im.getextrema()[0] >= 0:  # type: ignore[operator,index]
                arr = np.asarray(im).astype(np.uint16)
            elif mode in ("1", "P", "LA", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                conv = "RGBA" if ("A" in mode or "transparency" in im.info) else "RGB"
                arr = np.asarray(im.convert("L" if mode == "1" else conv))
            else:
                raise ImageError(f"{path}: unsupported image mode {mode}")
    except ImageError:
        raise
    except UnidentifiedImageError as exc:  # its text names the BytesIO ("<_io.BytesIO object at 0x…>"), not the file
        raise ImageError(f"{path}: unreadable image (cannot identify image file: not a format OpenCV or Pillow "
                         "decodes)") from exc
    except Exception as exc:  # Pillow raises many types for bad data
        why = _OBJECT_REPR.sub("<data>", str(exc))  # no memory addresses in a log line
        raise ImageError(f"{path}: unreadable image ({type(exc).__name__}: {why})") from exc
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.ndim == 3:  # Pillow gives RGB(A); hand back OpenCV order like cv2.imdecode
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR if arr.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    return np.ascontiguousarray(arr)


def read_image(path: str | Path, channel_order: str = "RGB") -> np.ndarray | None:
    """:func:`decode_image`, but a file that cannot be used gives ``None`` and one WARNING
    naming the file and why. Never raises on bad data.

    Returns:
        ``[H,W]`` / ``[H,W,3]`` / ``[H,W,4]`` uint8 or uint16, or ``None`` when the file is
        missing, unreadable, truncated, empty or of another dtype.

    Raises:
        ValueError: ``channel_order`` is not RGB/BGR (a programming error, not bad data).
    """
    try:
        return decode_image(path, channel_order)
    except ImageError as exc:
        log.warning("%s", exc)
        return None


def decode_image(path: str | Path, channel_order: str = "RGB") -> np.ndarray:
    """Read an image file (jpg/png/bmp/tiff; gray, colour, 16-bit, alpha) as a frame.

    Decoding is OpenCV ``cv2.imdecode(..., IMREAD_UNCHANGED)`` (bit depth and alpha kept, EXIF
    orientation ignored — like Pillow's ``Image.open``). A JPEG/PNG/BMP/TIFF that OpenCV rejects
    is corrupt; Pillow is the fallback only for other formats. A JPEG without its
    end-of-image marker (truncated: OpenCV 4.x returns a partly gray image for those, with only
    a libjpeg warning on stderr) is accepted only if Pillow decodes it completely (e.g. bytes
    appended after the marker). Logs nothing: the caller reports the error once.

    Args:
        path: image file.
        channel_order: ``"RGB"`` or ``"BGR"`` for colour images (see :func:`to_channel_order`).

    Returns:
        ``[H,W]`` / ``[H,W,3]`` / ``[H,W,4]`` uint8 or uint16.

    Raises:
        ImageError: the file is missing, unreadable, truncated, empty or of another dtype
            (message ``"<path>: <why>"``).
        ValueError: ``channel_order`` is not RGB/BGR (a programming error, not bad data).
    """
    if channel_order not in ("RGB", "BGR"):
        raise ValueError(f"channel order {channel_order!r}, expected 'RGB' or 'BGR'")
    p = Path(path)
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise ImageError(f"{p}: cannot read file ({exc})") from exc
    if data.size == 0:
        raise ImageError(f"{p}: empty file")
    img: np.ndarray | None
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is not None and bytes(data[:2]) == _JPEG_SOI and not _jpeg_complete(data):
        try:
            img = _pillow_decode(data.tobytes(), p)  # truncated -> error; trailing garbage -> decoded
        except ImageError as exc:
            raise ImageError(f"{p}: truncated JPEG (no end-of-image marker)") from exc
    if img is None:
        if bytes(data[:4]).startswith(_OPENCV_SIGNATURES):
            raise ImageError(f"{p}: corrupt or truncated image (OpenCV cannot decode it)")
        img = _pillow_decode(data.tobytes(), p)  # a format this OpenCV build lacks
    if img.dtype not in (np.uint8, np.uint16) or img.size == 0:
        raise ImageError(f"{p}: unsupported image dtype {img.dtype} / shape {img.shape} (expected uint8 or uint16)")
    if img.ndim == 3 and img.shape[2] not in (1, 3, 4):
        raise ImageError(f"{p}: unsupported channel count {img.shape[2]}")
    return to_channel_order(img, channel_order)


def list_images(folder: str | Path) -> list[Path]:
    """All image files under ``folder`` (recursive; suffix in :data:`IMAGE_EXTENSIONS`, any case),
    sorted by their relative POSIX path. Hidden files and folders (name starting with ``.``)
    are skipped. Symlinked folders are followed (a calibration set or replay folder is often
    assembled from links to class folders elsewhere), each real folder once: a second link to
    the same folder (the name that sorts first is kept) and a link back up the tree (a loop) are
    skipped.

    Raises:
        NotADirectoryError: ``folder`` does not exist or is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"image folder not found: {root}")
    found: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a loop, or the same folder under a second name: its images once
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            full = Path(dirpath) / name
            found.append((full.relative_to(root).as_posix(), full))
    found.sort(key=lambda t: t[0])
    return [p for _, p in found]
