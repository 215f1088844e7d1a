"""Synthetic machined parts on a conveyor, for ``edgeqc demo`` (no camera, no ../shared needed).

Top-down colour images (BGR ``uint8`` ``[IMAGE_HEIGHT, IMAGE_WIDTH, 3]``, as OpenCV writes them) of a
grey metal part -- a turned disc or washer, or a brushed rectangular tile -- on a dark rubber belt,
with a lighting gradient, vignetting, a specular highlight, a drop shadow, sensor noise and a random
pose, gain and focus. Four classes (:data:`CLASSES`):

* ``free``    -- no defect (the pass class, same name as the magnetic-tile dataset's pass class);
  may carry harmless dust specks and faint stains.
* ``scratch`` -- 1-3 thin, straight (slightly bent) line segments, 18-55 px, mostly bright.
* ``hole``    -- 1-4 dark round pits (blowholes) with a lit rim, radius 1.8-5.5 px.
* ``crack``   -- a jagged dark zig-zag polyline, sometimes branched and tapered.

Defects vary in size, position and contrast; the faint and small ones are hard but learnable.
Everything is deterministic given the seed (NumPy ``Generator`` + OpenCV drawing), so a
rendered set is reproducible byte for byte with the same NumPy/OpenCV versions.

Rendering one image takes about 1-3 ms on one CPU core.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import cv2
import numpy as np

CLASSES: tuple[str, ...] = ("free", "scratch", "hole", "crack")
"""Class names in the demo model's output order; ``free`` is the pass class."""

IMAGE_HEIGHT = 160
IMAGE_WIDTH = 160
SYNTH_VERSION = 1
"""Bump whenever rendering changes (invalidates cached demo folders; retrain the demo model)."""

DEMO_FREE_FRACTION = 0.7
_SHIFT = 4  # OpenCV sub-pixel drawing: coordinates carry 4 fractional bits
_ONE = 1 << _SHIFT


# --------------------------------------------------------------------------------------------- helpers
def _fix(pts: np.ndarray | tuple[float, float]) -> np.ndarray:
    """Float pixel coordinates -> OpenCV fixed-point int32 for ``shift=_SHIFT``."""
    return np.round(np.asarray(pts, dtype=np.float64) * _ONE).astype(np.int32)


def _grid() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:IMAGE_HEIGHT, 0:IMAGE_WIDTH].astype(np.float32)
    return xx, yy


_XX, _YY = _grid()


def _smooth_noise(rng: np.random.Generator, sigma: float, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Gaussian-blurred white noise, rescaled to unit std. ``[H,W] float32``."""
    h, w = shape or (IMAGE_HEIGHT, IMAGE_WIDTH)
    white = rng.standard_normal((h, w), dtype=np.float32)
    n: np.ndarray = cv2.GaussianBlur(white, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    s = float(n.std())
    return n / s if s > 0 else n


# ------------------------------------------------------------------------------------------ background
def _belt(rng: np.random.Generator) -> np.ndarray:
    """Dark rubber conveyor belt, ``[H,W,3] float32`` BGR in 0..255."""
    base = rng.uniform(42, 72)
    tint = np.array([rng.uniform(-4, 4), rng.uniform(0, 8), rng.uniform(-6, 2)], np.float32)
    period = rng.uniform(5.0, 9.0)
    ridges = 3.0 * np.sin(2 * np.pi * _YY / period + rng.uniform(0, 2 * np.pi))  # belt runs along x
    grain = _smooth_noise(rng, 0.8) * rng.uniform(2.0, 5.0) + _smooth_noise(rng, 6.0) * 3.0
    gray = base + ridges + grain
    if rng.random() < 0.3:  # belt splice seam
        x0 = rng.uniform(5, IMAGE_WIDTH - 5)
        gray = gray - 14.0 * np.exp(-((_XX - x0) ** 2) / 2.0)
    return gray[..., None] + tint


# ------------------------------------------------------------------------------------------------ part
class _Part:
    """Geometry of the rendered part: anti-aliased coverage mask and an interior mask for defects."""

    def __init__(self, rng: np.random.Generator) -> None:
        cx = IMAGE_WIDTH / 2 + rng.uniform(-9, 9)
        cy = IMAGE_HEIGHT / 2 + rng.uniform(-9, 9)
        self.center = (cx, cy)
        mask = np.zeros((IMAGE_HEIGHT, IMAGE_WIDTH), np.uint8)
        self.kind = "disc" if rng.random() < 0.5 else "tile"
        if self.kind == "disc":
            r_out = rng.uniform(50, 62)
            r_in = r_out * rng.uniform(0.26, 0.40) if rng.random() < 0.6 else 0.0
            cv2.circle(mask, tuple(_fix((cx, cy))), int(r_out * _ONE), 255, -1, cv2.LINE_AA, _SHIFT)
            if r_in > 0:
                cv2.circle(mask, tuple(_fix((cx, cy))), int(r_in * _ONE), 0, -1, cv2.LINE_AA, _SHIFT)
            self.r_out, self.r_in = r_out, r_in
            self.angle = rng.uniform(0, 180)
        else:
            w, h = rng.uniform(86, 112), rng.uniform(70, 96)
            self.angle = rng.uniform(-25, 25)
            box = cv2.boxPoints(((cx, cy), (w, h), self.angle))
            # rounded corners: shrink the box, draw it thick
            rad = rng.uniform(2.0, 7.0)
            inner = cv2.boxPoints(((cx, cy), (w - 2 * rad, h - 2 * rad), self.angle))
            cv2.fillPoly(mask, [_fix(inner)], 255, cv2.LINE_AA, _SHIFT)
            cv2.polylines(mask, [_fix(inner)], True, 255, max(1, round(2 * rad)), cv2.LINE_AA, _SHIFT)
            self.box = box
        self.mask = mask.astype(np.float32) / 255.0
        # defects stay a few px inside the part (not on the rim, not in the washer hole)
        self.interior = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))) > 250
        ys, xs = np.nonzero(self.interior)
        self._pts = np.stack([xs, ys], axis=1).astype(np.float64)

    def point(self, rng: np.random.Generator) -> np.ndarray:
        """A random interior point ``(x, y)`` in px (float64)."""
        return self._pts[rng.integers(len(self._pts))] + rng.uniform(-0.5, 0.5, 2)

    def inside(self, pts: np.ndarray) -> bool:
        """True when every point ``[K,2] (x, y)`` lies in the interior (so a mark is not cut off)."""
        xy = np.rint(pts).astype(np.int64)
        h, w = self.interior.shape
        if (xy < 0).any() or (xy[:, 0] >= w).any() or (xy[:, 1] >= h).any():
            return False
        return bool(self.interior[xy[:, 1], xy[:, 0]].all())


def _placed(rng: np.random.Generator, part: _Part, make, tries: int = 40) -> np.ndarray:
    """Points from ``make(rng, start_point)`` that lie wholly inside the part: up to ``tries`` draws,
    in the second half also tried at 70 % size; last resort the last draw at 50 % size."""
    pts = make(rng, part.point(rng))
    for i in range(tries):
        if part.inside(pts):
            return pts
        if i >= tries // 2:
            small = pts[0] + (pts - pts[0]) * 0.7
            if part.inside(small):
                return small
        pts = make(rng, part.point(rng))
    return pts[0] + (pts - pts[0]) * 0.5


def _metal(rng: np.random.Generator, part: _Part) -> np.ndarray:
    """Metal albedo with machining texture, ``[H,W] float32`` grey level 0..255."""
    level = rng.uniform(135, 200)
    if part.kind == "disc":
        cx, cy = part.center
        r = np.sqrt((_XX - cx) ** 2 + (_YY - cy) ** 2)
        turn = np.sin(2 * np.pi * r / rng.uniform(1.8, 3.5) + rng.uniform(0, 6.3)) * rng.uniform(1.5, 5.0)
        # anisotropic sheen of a turned face: brighter along one diameter
        theta = np.arctan2(_YY - cy, _XX - cx)
        sheen = np.cos(2 * (theta - math.radians(part.angle))) * rng.uniform(4, 14)
        tex: np.ndarray = turn + sheen
    else:
        white = rng.standard_normal((IMAGE_HEIGHT, IMAGE_WIDTH), dtype=np.float32)
        streaks = cv2.GaussianBlur(white, (0, 0), sigmaX=rng.uniform(5, 9), sigmaY=0.45, borderType=cv2.BORDER_REFLECT)
        rot = cv2.getRotationMatrix2D(part.center, -part.angle, 1.0)
        n: np.ndarray = cv2.warpAffine(streaks, rot, (IMAGE_WIDTH, IMAGE_HEIGHT), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REFLECT)
        tex = n / max(float(n.std()), 1e-6) * rng.uniform(2.5, 6.0)
    grain = _smooth_noise(rng, 0.7) * rng.uniform(1.0, 3.0)
    blotch = _smooth_noise(rng, 14.0) * rng.uniform(2.0, 6.0)
    return level + tex + grain + blotch


# --------------------------------------------------------------------------------------------- defects
def _scratches(rng: np.random.Generator, part: _Part, layer: np.ndarray) -> None:
    """1-3 straight (at most slightly bent) thin lines, 18-55 px, mostly bright (polished groove)."""

    def segment(rng: np.random.Generator, p0: np.ndarray) -> np.ndarray:
        ang = rng.uniform(0, np.pi)
        length = rng.uniform(18, 55)
        d = np.array([math.cos(ang), math.sin(ang)])
        normal = np.array([-d[1], d[0]])
        return np.array([p0 - d * length / 2, p0 + normal * rng.uniform(-1.0, 1.0), p0 + d * length / 2])

    n = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
    for _ in range(n):
        pts = _placed(rng, part, segment)
        thick = 1 if rng.random() < 0.65 else 2
        contrast = rng.uniform(35, 80) * (1.0 if rng.random() < 0.75 else -1.0)
        m = np.zeros_like(layer, dtype=np.uint8)
        cv2.polylines(m, [_fix(pts)], False, 255, thick, cv2.LINE_AA, _SHIFT)
        layer += m.astype(np.float32) * (contrast / 255.0)


def _holes(rng: np.random.Generator, part: _Part, layer: np.ndarray) -> None:
    n = int(rng.choice([1, 2, 3, 4], p=[0.45, 0.3, 0.15, 0.1]))
    light = rng.uniform(0, 2 * np.pi)
    placed: list[tuple[np.ndarray, float]] = []
    for _ in range(n):
        rad = rng.uniform(1.8, 5.5)
        for _ in range(20):  # pits do not touch each other (a chain of pits would look like a crack)
            c = part.point(rng)
            if all(np.hypot(*(c - c2)) > rad + r2 + 4.0 for c2, r2 in placed):
                break
        else:
            continue
        placed.append((c, rad))
        depth = rng.uniform(40, 110)
        m = np.zeros_like(layer, dtype=np.uint8)
        cv2.circle(m, tuple(_fix(c)), int(rad * _ONE), 255, -1, cv2.LINE_AA, _SHIFT)
        core = cv2.GaussianBlur(m.astype(np.float32) / 255.0, (0, 0), 0.6)
        # lit rim on the side away from the light (the pit wall facing the light source)
        rim = np.zeros_like(layer, dtype=np.uint8)
        off = np.array([math.cos(light), math.sin(light)]) * rad * 0.5
        cv2.circle(rim, tuple(_fix(c - off)), int((rad + 1.0) * _ONE), 255, -1, cv2.LINE_AA, _SHIFT)
        rim_f = np.clip(rim.astype(np.float32) / 255.0 - core, 0, 1)
        layer += -depth * core + 0.3 * depth * rim_f


def _walk(rng: np.random.Generator, start: np.ndarray, heading: float, steps: int) -> np.ndarray:
    """Jagged path: each short step deviates sharply from a slowly drifting main heading."""
    pts = [start]
    for _ in range(steps):
        heading += rng.normal(0, 0.12)
        step_dir = heading + rng.normal(0, 0.9)
        step = rng.uniform(3.5, 7.0)
        pts.append(pts[-1] + step * np.array([math.cos(step_dir), math.sin(step_dir)]))
    return np.array(pts)


def _cracks(rng: np.random.Generator, part: _Part, layer: np.ndarray) -> None:
    """A dark zig-zag (7-13 steps of 3.5-7 px), often tapered (one half wider), sometimes branched."""
    heading = rng.uniform(0, 2 * np.pi)
    steps = int(rng.integers(7, 14))
    pts = _placed(rng, part, lambda r, p0: _walk(r, p0, heading, steps))
    contrast = rng.uniform(50, 100)
    m = np.zeros_like(layer, dtype=np.uint8)
    half = len(pts) // 2
    wide = rng.random() < 0.6  # the older half of the crack has opened wider
    cv2.polylines(m, [_fix(pts[: half + 1])], False, 255, 2 if wide else 1, cv2.LINE_AA, _SHIFT)
    cv2.polylines(m, [_fix(pts[half:])], False, 255, 1, cv2.LINE_AA, _SHIFT)
    if rng.random() < 0.4:  # branch
        k = int(rng.integers(1, len(pts) - 1))
        br = _walk(rng, pts[k], heading + rng.choice([-1, 1]) * rng.uniform(0.6, 1.2), int(rng.integers(3, 7)))
        cv2.polylines(m, [_fix(br)], False, 255, 1, cv2.LINE_AA, _SHIFT)
    f = cv2.GaussianBlur(m.astype(np.float32) / 255.0, (0, 0), 0.5)
    layer -= f * contrast


def _nuisance(rng: np.random.Generator, part: _Part, layer: np.ndarray) -> None:
    """Harmless things every class may show: light dust specks and a faint stain."""
    if rng.random() < 0.35:
        m = np.zeros_like(layer, dtype=np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            cv2.circle(m, tuple(_fix(part.point(rng))), int(rng.uniform(0.6, 1.3) * _ONE), 255, -1, cv2.LINE_AA, _SHIFT)
        layer += m.astype(np.float32) * (rng.uniform(8, 20) / 255.0)
    if rng.random() < 0.3:
        c = part.point(rng)
        s = rng.uniform(6, 14)
        layer -= rng.uniform(4, 10) * np.exp(-((_XX - c[0]) ** 2 + (_YY - c[1]) ** 2) / (2 * s * s))


_DEFECTS = {"scratch": _scratches, "hole": _holes, "crack": _cracks}


# ---------------------------------------------------------------------------------------------- public
def render_part(rng: np.random.Generator, defect: str) -> np.ndarray:
    """Render one part image.

    Args:
        rng: source of all randomness (``np.random.default_rng(seed)``); the image is a pure
            function of the generator state.
        defect: one of :data:`CLASSES` (``"free"`` = no defect).

    Returns:
        ``[IMAGE_HEIGHT, IMAGE_WIDTH, 3] uint8`` BGR image.

    Raises:
        ValueError: ``defect`` is not one of :data:`CLASSES`.
    """
    if defect not in CLASSES:
        raise ValueError(f"defect must be one of {CLASSES}, got {defect!r}")
    belt = _belt(rng)
    part = _Part(rng)
    metal = _metal(rng, part)
    layer = np.zeros((IMAGE_HEIGHT, IMAGE_WIDTH), np.float32)
    _nuisance(rng, part, layer)
    if defect != "free":
        _DEFECTS[defect](rng, part, layer)
    # marks fade out a few px inside the part outline (never on the rim or in the washer hole)
    metal = metal + layer * cv2.GaussianBlur(part.interior.astype(np.float32), (0, 0), 1.5)
    # chamfer at the part edge: a thin bright or dark rim
    edge = part.mask - cv2.erode(part.mask, np.ones((3, 3), np.uint8))
    metal = metal + cv2.GaussianBlur(edge, (0, 0), 0.8) * rng.uniform(-40, 40)
    tint = np.array([rng.uniform(-5, 8), rng.uniform(-3, 3), rng.uniform(-8, 4)], np.float32)
    metal3 = metal[..., None] + tint

    # drop shadow of the part on the belt
    shift = rng.uniform(2, 6, 2)
    rot = np.array([[1, 0, shift[0]], [0, 1, shift[1]]], np.float32)
    shadow = cv2.warpAffine(part.mask, rot, (IMAGE_WIDTH, IMAGE_HEIGHT))
    shadow = cv2.GaussianBlur(shadow, (0, 0), rng.uniform(2, 4))
    belt = belt * (1.0 - rng.uniform(0.3, 0.55) * shadow)[..., None]

    m = part.mask[..., None]
    img = belt * (1.0 - m) + metal3 * m

    # lighting: linear gradient + vignette + specular highlight on the metal
    a = math.radians(rng.uniform(0, 360))
    grad = ((_XX - IMAGE_WIDTH / 2) * math.cos(a) + (_YY - IMAGE_HEIGHT / 2) * math.sin(a)) / IMAGE_WIDTH
    r2 = ((_XX - IMAGE_WIDTH / 2) ** 2 + (_YY - IMAGE_HEIGHT / 2) ** 2) / (IMAGE_WIDTH / 2) ** 2
    illum = (1.0 + rng.uniform(0.1, 0.4) * 2 * grad) * (1.0 - rng.uniform(0.0, 0.25) * r2) * rng.uniform(0.8, 1.15)
    img = img * illum[..., None]
    spec_c = part.point(rng)
    s = rng.uniform(18, 40)
    spec = np.exp(-((_XX - spec_c[0]) ** 2 + (_YY - spec_c[1]) ** 2) / (2 * s * s)) * rng.uniform(0, 40)
    img = img + (spec * part.mask)[..., None]

    # optics and sensor
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.7))
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(1.5, 5.0)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _counts(counts: int | Mapping[str, int]) -> dict[str, int]:
    if isinstance(counts, Mapping):
        bad = [k for k in counts if k not in CLASSES]
        if bad:
            raise ValueError(f"counts: unknown class(es) {bad}; expected keys from {CLASSES}")
        out = {c: int(counts.get(c, 0)) for c in CLASSES}
    else:
        out = {c: int(counts) for c in CLASSES}
    neg = {k: v for k, v in out.items() if v < 0}
    if neg:
        raise ValueError(f"counts: must be >= 0, got {neg}")
    return out


def _split_key(split: str) -> int:
    return zlib.crc32(split.encode("utf-8"))


def render_dataset(
    folder: str | os.PathLike[str],
    counts: int | Mapping[str, int],
    seed: int = 0,
    split: str = "train",
) -> list[Path]:
    """Render a labelled image set as PNG files ``<folder>/<class>/part_<nnnnn>.png``.

    Image ``k`` of class ``c`` is drawn from ``np.random.default_rng(SeedSequence([seed,
    crc32(split), class index, k]))``, so it does not depend on the other counts. Part numbers
    ``nnnnn`` (0 .. total-1) are given in a seeded shuffled order, so sorting the files by name
    (see :func:`replay_order`) interleaves the classes like a real production stream.

    Args:
        folder: output folder (created; existing files with the same names are overwritten).
        counts: images per class -- an int for every class, or ``{"free": 42, "hole": 6, ...}``.
        seed: non-negative int; use different seeds for training, validation and demo sets.
        split: name mixed into the seed (``"train"``, ``"val"``, ``"demo"``, ...).

    Returns:
        The written paths in part-number order.

    Raises:
        ValueError: unknown class in ``counts``, negative count or negative seed.
        OSError: the folder or a file cannot be written.
    """
    root = Path(folder)
    paths: list[Path] = []
    for number, label, img in iter_parts(counts, seed, split):
        path = root / label / f"part_{number:05d}.png"
        if number == 0 or not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), img):
            raise OSError(f"cannot write {path}")
        paths.append(path)
    return paths


def iter_parts(
    counts: int | Mapping[str, int], seed: int = 0, split: str = "train"
) -> Iterator[tuple[int, str, np.ndarray]]:
    """Yield ``(part number, class name, image [H,W,3] uint8 BGR)`` in part-number order.

    The same images :func:`render_dataset` writes, without files (for training in memory).

    Raises:
        ValueError: unknown class in ``counts``, negative count or negative seed.
    """
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    per_class = _counts(counts)
    labels = [c for c in CLASSES for _ in range(per_class[c])]
    index = [k for c in CLASSES for k in range(per_class[c])]
    order = np.random.default_rng(np.random.SeedSequence([int(seed), _split_key(split), 99])).permutation(len(labels))
    for number, i in enumerate(order):
        c, k = labels[i], index[i]
        yield number, c, render_part(part_rng(seed, split, c, k), c)


def part_rng(seed: int, split: str, label: str, k: int) -> np.random.Generator:
    """The generator of image ``k`` of class ``label`` in set ``(seed, split)``.

    ``render_part(part_rng(seed, split, label, k), label)`` is the image :func:`render_dataset`
    writes for it; lets a caller render any subset (e.g. in parallel workers).
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), _split_key(split), CLASSES.index(label), int(k)]))


def replay_order(folder: str | os.PathLike[str]) -> list[Path]:
    """``part_*.png`` files under the class subfolders of ``folder``, sorted by file name.

    This is production order (classes interleaved); sorting by relative path would instead play
    one class after the other. The ground-truth label of a path is ``path.parent.name``.
    """
    root = Path(folder)
    files = [p for c in CLASSES if (root / c).is_dir() for p in (root / c).glob("part_*.png")]
    return sorted(files, key=lambda p: (p.name, p.parent.name))


def demo_counts(n: int) -> dict[str, int]:
    """Class mix of the demo replay: about 70 % ``free``, the rest spread over the defects.

    Raises:
        ValueError: ``n`` < 1.
    """
    if n < 1:
        raise ValueError(f"n (demo parts) must be >= 1, got {n}")
    free = round(n * DEMO_FREE_FRACTION)
    if n >= 4:
        free = min(free, n - 3)  # at least one of each defect
    rest = n - free
    defects = CLASSES[1:]
    out = {"free": free}
    for i, c in enumerate(defects):
        out[c] = rest // len(defects) + (1 if i < rest % len(defects) else 0)
    return out


def _cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edgeqc"


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
        return True
    except OSError:
        return False


def demo_folder(cache_dir: str | os.PathLike[str] | None = None, n: int = 60, seed: int = 0) -> Path:
    """Render (once) and return the demo replay folder ``<cache>/demo-<hash>/<class>/part_<nnnnn>.png``.

    The hash covers :data:`SYNTH_VERSION`, image size, ``n``, ``seed`` and the class mix
    (:func:`demo_counts`), so a renderer change or other parameters give a new folder. The cache is
    ``cache_dir``, else ``$XDG_CACHE_HOME/edgeqc`` or ``~/.cache/edgeqc``; if that is not writable,
    a folder under the system temp dir. The folder is filled in a temporary sibling and renamed into
    place, so a reader never sees a half-rendered set; ``manifest.json`` lists the counts.

    Args:
        cache_dir: parent folder of the ``demo-<hash>`` folder (None = user cache, see above).
        n: number of part images (>= 1).
        seed: non-negative seed of the demo set (the demo model was trained on other seeds).

    Returns:
        The folder. Play it with :func:`replay_order`.

    Raises:
        ValueError: ``n`` < 1 or ``seed`` < 0.
    """
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    counts = demo_counts(int(n))
    params = {"version": SYNTH_VERSION, "size": [IMAGE_HEIGHT, IMAGE_WIDTH], "n": int(n), "seed": int(seed),
              "counts": counts}
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    root = _cache_root(cache_dir)
    if not _writable_dir(root):
        root = Path(tempfile.gettempdir()) / f"edgeqc-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
        root.mkdir(parents=True, exist_ok=True)
    final = root / f"demo-{digest}"
    if _complete(final, n):
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".demo-{digest}-", dir=root))
    try:
        render_dataset(tmp, counts, seed=int(seed), split="demo")
        (tmp / "manifest.json").write_text(json.dumps(params, indent=1) + "\n", encoding="utf-8")
        if not _complete(final, n):  # another process may have finished meanwhile
            if final.exists():  # stale or incomplete leftover of an interrupted run
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.rename(tmp, final)
            except OSError:  # another process won the race: use its folder
                if not _complete(final, n):
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _complete(folder: Path, n: int) -> bool:
    return (folder / "manifest.json").is_file() and len(replay_order(folder)) == n


__all__ = [
    "CLASSES",
    "IMAGE_HEIGHT",
    "IMAGE_WIDTH",
    "SYNTH_VERSION",
    "demo_counts",
    "demo_folder",
    "iter_parts",
    "part_rng",
    "render_dataset",
    "render_part",
    "replay_order",
]
