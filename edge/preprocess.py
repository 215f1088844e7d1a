"""The ONE preprocessing of edgeqc: frame -> ``[3,H,W] float32`` model input.

Used by the inspection loop, calibration and evaluation alike, so a model sees the same
pixels everywhere. Steps (see docs/preprocessing.md for the measurements behind the choices):

1. **Frame check**: uint8 or uint16, ``[H,W]``, ``[H,W,1]``, ``[H,W,3]`` or ``[H,W,4]``, already in
   the model's channel order (:func:`edge.frames.to_channel_order`); alpha is dropped.
2. **Resize on the integer image** (``spec.resize``; :func:`plan_geometry` gives the numbers):
   ``stretch`` to H×W; ``center_crop`` = scale so the image covers H×W keeping aspect (torchvision
   ``Resize(size)``: the long side is ``int(size*long/short)``), then crop the centre
   (torchvision ``CenterCrop`` offsets ``round((h-H)/2)``); ``letterbox`` = scale to fit inside
   (Ultralytics ``LetterBox`` sizes ``round(w*r)``), centre on a canvas of gray **114**
   (Ultralytics' pad value; ``114*257`` for 16-bit frames).
   ``spec.interpolation``: ``pillow_bilinear`` = ``PIL.Image.resize(..., BILINEAR)`` (antialiased
   when downscaling; exact Pillow), or OpenCV ``area``/``linear``/``nearest``/``cubic``.
3. **One fused conversion**: ``out[c] = pixel * a[c] + b[c]`` with ``a = scale/std``,
   ``b = -mean/std`` (``scale`` is for 8-bit values; 16-bit frames use ``scale*255/65535``),
   written channel by channel into the ``[3,H,W]`` output (HWC -> CHW). Gray frames are
   replicated to 3 channels by this step. For 8-bit frames it is a 256-entry float32 lookup table
   per channel (``cv2.LUT``) filled with exactly that float32 arithmetic, so the values are the
   same bits as ``np.multiply``/``np.add`` would give, in one pass and without temporaries.

Allocation in steady state (same frame size as before, per thread): none of frame size on the
Python heap. Resizes write into cached per-thread buffers: OpenCV through ``dst=``;
``pillow_bilinear`` runs Pillow's own resampler (``ImagingCore.resize``, so bit-exact by
construction) on the frame *mapped* without a copy (``Image.core.map_buffer``; colour frames are
first widened to Pillow's 4-byte RGBX layout in a cached buffer) and pastes Pillow's result into a
mapped cached buffer; only Pillow's C-side temporary and result image remain (freed at once,
not Python objects). The conversion writes into ``out``. Still allocating: 16-bit frames (the
NumPy/Pillow per-channel path), a non-contiguous frame (one copy), and ``out=None``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from edge.model_spec import ModelSpec

PAD_VALUE = 114
"""Letterbox fill for 8-bit frames (Ultralytics' value); 16-bit frames use ``PAD_VALUE * 257``."""

_CV2_INTERPOLATION = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "nearest": cv2.INTER_NEAREST,
    "cubic": cv2.INTER_CUBIC,
}


class PreprocessError(ValueError):
    """A frame or output buffer cannot be preprocessed (message names shape/dtype and expectation)."""


@dataclass(frozen=True)
class Geometry:
    """How a ``src_h × src_w`` frame maps onto the ``H × W`` input.

    The frame is resized to ``resize_h × resize_w``; then the window starting at
    ``(crop_y, crop_x)`` of size H×W is taken (center_crop), or the resized image is placed at
    ``(pad_top, pad_left)`` on an H×W canvas (letterbox). All values in px.
    """

    resize_h: int
    resize_w: int
    crop_y: int = 0
    crop_x: int = 0
    pad_top: int = 0
    pad_left: int = 0


def plan_geometry(src_h: int, src_w: int, spec: ModelSpec) -> Geometry:
    """Resize/crop/pad numbers for a ``src_h × src_w`` frame under ``spec.resize``."""
    H, W = spec.input_size
    if spec.resize == "stretch":
        return Geometry(H, W)
    if spec.resize == "center_crop":
        if H * src_w >= W * src_h:  # height is the binding side
            rh, rw = H, max(W, (src_w * H) // src_h)
        else:
            rh, rw = max(H, (src_h * W) // src_w), W
        return Geometry(rh, rw, crop_y=round((rh - H) / 2.0), crop_x=round((rw - W) / 2.0))
    # letterbox
    r = min(H / src_h, W / src_w)
    rh = min(H, max(1, round(src_h * r)))
    rw = min(W, max(1, round(src_w * r)))
    return Geometry(rh, rw, pad_top=(H - rh) // 2, pad_left=(W - rw) // 2)


@lru_cache(maxsize=64)
def _coefficients(scale: float, mean: tuple[float, ...], std: tuple[float, ...], sixteen_bit: bool
                  ) -> tuple[tuple[np.float32, ...], tuple[np.float32, ...]]:
    s = scale * (255.0 / 65535.0) if sixteen_bit else scale
    a = tuple(np.float32(s / sd) for sd in std)
    b = tuple(np.float32(-m / sd) for m, sd in zip(mean, std))
    return a, b


class _Workspace:
    """Per-thread scratch buffers keyed by (shape, dtype); a few sizes are kept (LRU)."""

    def __init__(self, keep: int = 8) -> None:
        self._bufs: OrderedDict[tuple[str, tuple[int, ...], str], np.ndarray] = OrderedDict()
        self._keep = keep

    def get(self, tag: str, shape: tuple[int, ...], dtype: np.dtype, fill: int | None = None) -> np.ndarray:
        key = (tag, shape, dtype.str)
        buf = self._bufs.get(key)
        if buf is None:
            buf = np.empty(shape, dtype) if fill is None else np.full(shape, fill, dtype)
            self._bufs[key] = buf
            while len(self._bufs) > self._keep:
                self._bufs.popitem(last=False)
        else:
            self._bufs.move_to_end(key)
        return buf


_local = threading.local()


def _workspace() -> _Workspace:
    ws = getattr(_local, "ws", None)
    if ws is None:
        ws = _local.ws = _Workspace()
    return ws


def _check_frame(frame: object) -> np.ndarray:
    if not isinstance(frame, np.ndarray):
        raise PreprocessError(f"frame is {type(frame).__name__}, expected a numpy array")
    if frame.dtype not in (np.uint8, np.uint16):
        raise PreprocessError(f"frame dtype {frame.dtype}, expected uint8 or uint16")
    if not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3, 4))):
        raise PreprocessError(f"frame shape {frame.shape}, expected [H,W], [H,W,1], [H,W,3] or [H,W,4]")
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise PreprocessError(f"frame shape {frame.shape} is empty")
    return frame


def _pillow_resize16(img: np.ndarray, size_hw: tuple[int, int], dst: np.ndarray) -> None:
    """Pillow ``Image.resize((w, h), BILINEAR)`` of a contiguous gray/3-channel uint16 image into
    ``dst`` (colour: per channel as mode ``I;16``). Allocates Pillow images (16-bit frames are rare)."""
    from PIL import Image

    h, w = size_hw
    if img.ndim == 2:
        np.copyto(dst, np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR)))
        return
    for c in range(img.shape[2]):
        plane = np.ascontiguousarray(img[:, :, c])
        dst[:, :, c] = np.asarray(Image.fromarray(plane).resize((w, h), Image.Resampling.BILINEAR))


def _pillow_core() -> Any:
    from PIL import Image

    return Image.core


def _map(buf: np.ndarray, mode: str) -> Any:
    """A Pillow core image sharing the memory of the C-contiguous ``buf`` (``[H,W]`` for ``L``,
    ``[H,W,4]`` for ``RGBX``); no copy (Pillow's ``Image.frombuffer`` raw mapping)."""
    return _pillow_core().map_buffer(buf, (buf.shape[1], buf.shape[0]), "raw", 0, (mode, 0, 1))


def _pillow_resize8(img: np.ndarray, size_hw: tuple[int, int], ws: _Workspace) -> np.ndarray:
    """Exact ``PIL.Image.resize((w, h), Image.BILINEAR)`` of a C-contiguous uint8 ``[H,W]``,
    ``[H,W,3]`` or ``[H,W,4]`` frame, into a cached buffer: ``[h,w]`` for gray, ``[h,w,4]`` (RGBX,
    the 4th channel is not meaningful) for colour.

    Pillow's own resampler runs (``ImagingCore.resize``: separable, 22-bit fixed point, uint8
    between the passes), so the pixels are Pillow's by construction; Pillow resamples RGB through
    the same 4-byte loop as RGBX, so widening a colour frame to RGBX changes nothing in R, G, B.
    """
    h, w = size_hw
    H, W = img.shape[:2]
    if img.ndim == 2:
        mode, src, dst = "L", img, ws.get("resize", (h, w), img.dtype)
    else:
        mode, dst = "RGBX", ws.get("resize4", (h, w, 4), img.dtype)
        if img.shape[2] == 4:
            src = img
        else:
            src = cv2.cvtColor(img, cv2.COLOR_RGB2RGBA, dst=ws.get("rgbx", (H, W, 4), img.dtype))
    _map(dst, mode).paste(_map(src, mode).resize((w, h), _BILINEAR, (0, 0, W, H)), (0, 0, w, h))
    return dst


_BILINEAR = 2  # PIL.Image.Resampling.BILINEAR


def _resize(img: np.ndarray, size_hw: tuple[int, int], interpolation: str, ws: _Workspace) -> np.ndarray:
    if img.shape[:2] == size_hw:
        return img
    if interpolation == "pillow_bilinear":
        if img.dtype == np.uint8:
            return _pillow_resize8(img, size_hw, ws)
        dst = ws.get("resize", size_hw + img.shape[2:], img.dtype)
        _pillow_resize16(img, size_hw, dst)
        return dst
    dst = ws.get("resize", size_hw + img.shape[2:], img.dtype)
    flag = _CV2_INTERPOLATION.get(interpolation)
    if flag is None:
        raise PreprocessError(f"interpolation {interpolation!r}, expected pillow_bilinear, "
                              f"{', '.join(_CV2_INTERPOLATION)}")
    res = cv2.resize(img, (size_hw[1], size_hw[0]), dst=dst, interpolation=flag)
    return res if res is not None else dst


def _fit(img: np.ndarray, spec: ModelSpec, ws: _Workspace) -> np.ndarray:
    """Resize/crop/pad the integer image to ``[H,W]`` or ``[H,W,3]`` (views where possible)."""
    H, W = spec.input_size
    g = plan_geometry(img.shape[0], img.shape[1], spec)
    resized = _resize(img, (g.resize_h, g.resize_w), spec.interpolation, ws)
    if spec.resize == "stretch":
        return resized
    if spec.resize == "center_crop":
        return resized[g.crop_y:g.crop_y + H, g.crop_x:g.crop_x + W]
    pad = PAD_VALUE * 257 if img.dtype == np.uint16 else PAD_VALUE
    canvas = ws.get("letterbox", (H, W) + resized.shape[2:], img.dtype, fill=pad)
    # Keep the border at the pad value: the canvas is reused for frames of other sizes.
    canvas[...] = pad
    canvas[g.pad_top:g.pad_top + g.resize_h, g.pad_left:g.pad_left + g.resize_w] = resized
    return canvas


def _normalized(frame: np.ndarray, spec: ModelSpec, ws: _Workspace) -> np.ndarray:
    """[H,W,1] -> [H,W]; C-contiguous; alpha dropped unless the Pillow path ignores it anyway."""
    img = frame
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not img.flags.c_contiguous:
        img = np.ascontiguousarray(img)
    if img.ndim == 3 and img.shape[2] == 4 and (img.dtype == np.uint16 or spec.interpolation != "pillow_bilinear"):
        # drop alpha (order unchanged); Pillow maps an 8-bit RGBA frame as RGBX and never reads the 4th channel
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2RGB, dst=ws.get("rgb", img.shape[:2] + (3,), img.dtype))
    return img


def fit_key(spec: ModelSpec) -> tuple[object, ...]:
    """What a fitted image depends on: input size, resize mode, interpolation."""
    return (tuple(spec.input_size), spec.resize, spec.interpolation)


def tensor_key(spec: ModelSpec) -> tuple[object, ...]:
    """What a prepared model tensor depends on: :func:`fit_key` plus the normalization."""
    return ("tensor", *fit_key(spec), spec.channel_order, float(spec.scale), tuple(spec.mean), tuple(spec.std))


class Fitter:
    """Preprocessing ahead of the trigger, for a capture thread, into a new array per frame.

    ``Fitter(spec)``: step 2 alone (resize/crop/pad on the integer image): ``fitter(frame)`` is
    ``[H,W]`` or ``[H,W,3]`` of the frame's dtype at the model input size, and
    ``preprocess(fitter(frame), spec)`` equals ``preprocess(frame, spec)`` bit for bit (an image
    already at the input size passes step 2 unchanged in every resize mode). ``key`` is
    :func:`fit_key`.

    ``Fitter(spec, tensor=True)``: steps 2 and 3, the model input itself: ``[3,H,W] float32``,
    equal to ``preprocess(frame, spec)``; :class:`Preprocessor` then only copies it into the batch
    buffer (one 602 112-byte copy at 224×224 instead of the conversion on the trigger path).
    ``key`` is :func:`tensor_key`. What :class:`edge.app.Station` uses.

    The inspection loop uses ``Frame.prepared`` only when ``Frame.prepared_key`` is the running
    model's key (a model swap to another input size or normalization is safe).

    Raises (on call):
        PreprocessError: wrong frame dtype/shape.
    """

    def __init__(self, spec: ModelSpec, tensor: bool = False) -> None:
        self.spec = spec
        self.tensor = tensor
        self.key = tensor_key(spec) if tensor else fit_key(spec)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.tensor:
            return preprocess(frame, self.spec)  # a new array: it leaves this thread
        ws = _workspace()
        fitted = _fit(_normalized(_check_frame(frame), self.spec, ws), self.spec, ws)
        if fitted.ndim == 3 and fitted.shape[2] == 4:  # Pillow's RGBX
            fitted = fitted[:, :, :3]
        if fitted.shape == frame.shape and np.shares_memory(fitted, frame):
            return frame  # already at the input size: the frame itself (frames are never modified)
        return np.array(fitted, order="C", copy=True)  # never a per-thread buffer: it leaves this thread


def preprocess(frame: np.ndarray, spec: ModelSpec, out: np.ndarray | None = None) -> np.ndarray:
    """Turn one frame into the model input ``[3,H,W] float32`` (see the module docstring).

    Args:
        frame: ``[H,W]`` / ``[H,W,1]`` / ``[H,W,3]`` / ``[H,W,4]``, uint8 or uint16, in
            ``spec.channel_order`` (alpha, if any, is dropped).
        spec: the model spec (input size, resize, interpolation, scale, mean, std).
        out: optional ``[3,H,W] float32`` array to write into (e.g. a row of a batch buffer).

    Returns:
        ``out`` (or a new ``[3,H,W] float32`` array).

    Raises:
        PreprocessError: wrong frame dtype/shape, or ``out`` of the wrong shape/dtype.
    """
    frame = _check_frame(frame)
    H, W = spec.input_size
    if out is None:
        out = np.empty((3, H, W), np.float32)
    elif not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != (3, H, W):
        got = f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}"
        raise PreprocessError(f"out buffer is {got}, expected float32 (3, {H}, {W})")
    ws = _workspace()
    fitted = _fit(_normalized(frame, spec, ws), spec, ws)
    if frame.dtype == np.uint8:
        luts = _luts(spec.scale, spec.mean, spec.std)
        for c in range(3):
            if fitted.ndim == 2:
                plane = fitted
            else:
                plane = cv2.extractChannel(fitted, c, dst=ws.get(f"plane{c}", fitted.shape[:2], fitted.dtype))
            _lut(plane, luts[c], out[c])
        return out
    a, b = _coefficients(spec.scale, spec.mean, spec.std, True)
    for c in range(3):
        src = fitted if fitted.ndim == 2 else fitted[:, :, c]
        np.multiply(src, a[c], out=out[c])
        np.add(out[c], b[c], out=out[c])
    return out


@lru_cache(maxsize=64)
def _luts(scale: float, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[np.ndarray, ...]:
    """Per channel ``[256] float32``: ``v * a[c] + b[c]`` for every 8-bit value ``v``, computed with
    the same float32 NumPy operations as the 16-bit path (bit-identical results)."""
    a, b = _coefficients(scale, mean, std, False)
    v = np.arange(256, dtype=np.uint8)
    out = []
    for c in range(3):
        t = np.empty(256, np.float32)
        np.multiply(v, a[c], out=t)
        np.add(t, b[c], out=t)
        t.setflags(write=False)
        out.append(t)
    return tuple(out)


def _lut(plane: np.ndarray, lut: np.ndarray, out: np.ndarray) -> None:
    """``out[...] = lut[plane]`` (uint8 ``[H,W]`` -> float32 ``[H,W]``, ``out`` C-contiguous)."""
    res = cv2.LUT(plane, lut, dst=out)
    if res is not out and not np.shares_memory(res, out):  # OpenCV could not write in place
        np.copyto(out, res.reshape(out.shape))


class Preprocessor:
    """Batch preprocessing into one preallocated ``[max_batch,3,H,W] float32`` buffer.

    Not thread-safe: use one per inspection thread. The views returned by :meth:`batch` are
    overwritten by the next call.

    Args:
        buffer: write into this C-contiguous ``[max_batch,3,H,W] float32`` array instead of a new
            one (e.g. a backend's page-locked input buffer, so no copy is needed before the H2D
            transfer).

    Raises:
        PreprocessError: ``max_batch`` < 1, or ``buffer`` of another shape/dtype/layout.
    """

    def __init__(self, spec: ModelSpec, max_batch: int, buffer: np.ndarray | None = None) -> None:
        if max_batch < 1:
            raise PreprocessError(f"max_batch = {max_batch}, expected >= 1")
        self.spec = spec
        self.max_batch = int(max_batch)
        H, W = spec.input_size
        if buffer is None:
            buffer = np.empty((self.max_batch, 3, H, W), np.float32)
        elif (not isinstance(buffer, np.ndarray) or buffer.dtype != np.float32
              or buffer.shape != (self.max_batch, 3, H, W) or not buffer.flags.c_contiguous):
            got = f"{getattr(buffer, 'dtype', type(buffer).__name__)} {getattr(buffer, 'shape', '')}"
            raise PreprocessError(f"batch buffer is {got}, expected C-contiguous float32 "
                                  f"({self.max_batch}, 3, {H}, {W})")
        self.buffer: np.ndarray = buffer

    def batch(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Preprocess ``frames`` into the buffer; returns the C-contiguous view ``[n,3,H,W] float32``.

        Each frame is a camera frame (see :func:`preprocess`), an image already fitted by
        ``Fitter(spec)``, or a ``[3,H,W] float32`` model tensor made by ``Fitter(spec, tensor=True)``
        (copied as is: the caller checks ``tensor_key``).

        Raises:
            PreprocessError: more than ``max_batch`` frames, or a bad frame (message gives its index).
        """
        n = len(frames)
        if n > self.max_batch:
            raise PreprocessError(f"{n} frames, but this Preprocessor holds at most max_batch = {self.max_batch}")
        for i, frame in enumerate(frames):
            try:
                if isinstance(frame, np.ndarray) and frame.dtype == np.float32:
                    self._copy_tensor(frame, i)
                    continue
                preprocess(frame, self.spec, out=self.buffer[i])
            except PreprocessError as exc:
                raise PreprocessError(f"frame {i}: {exc}") from None
        return self.buffer[:n]

    def _copy_tensor(self, tensor: np.ndarray, i: int) -> None:
        """A model tensor made ahead (``Fitter(spec, tensor=True)``) goes into row ``i`` as is."""
        row = self.buffer[i]
        if tensor.shape != row.shape:
            raise PreprocessError(f"prepared tensor is float32 {tensor.shape}, expected float32 {row.shape}")
        np.copyto(row, tensor)

    def one(self, frame: np.ndarray) -> np.ndarray:
        """Preprocess a single frame; returns the view ``[1,3,H,W] float32``."""
        return self.batch((frame,))
