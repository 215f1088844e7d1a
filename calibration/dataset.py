"""Image folders for calibration and evaluation, read through the one preprocessing.

- :func:`scan_images` lists a folder (recursive, :func:`edge.frames.list_images`) and hashes it
  (file list + contents), so a calibration cache knows when the data changed.
- :func:`preprocess_folder` decodes every image once (:func:`edge.frames.read_image`), runs
  :func:`edge.preprocess.preprocess` (the only preprocessing in edgeqc) and stores the
  ``[3,H,W] float32`` results in a disk-backed array (``numpy.memmap``), so peak memory stays a
  few batches however many images there are. Unreadable/truncated files are skipped and counted.
- :func:`scan_labelled` reads a labelled folder: one subfolder per class (another tool's export
  works as long as the folder names are the model's labels).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.frames import list_images, read_image
from edge.model_spec import ModelSpec
from edge.preprocess import preprocess

log = logging.getLogger("edgeqc.calibration")


class DatasetError(ValueError):
    """An image folder cannot be used (missing, too few usable images, unknown class folders)."""


@dataclass(frozen=True)
class ImageList:
    """A folder's image files (sorted relative paths) and the sha256 of list + contents."""

    root: Path
    files: tuple[Path, ...]
    sha256: str

    def rel(self, p: Path) -> str:
        return p.relative_to(self.root).as_posix()


def scan_images(folder: str | Path) -> ImageList:
    """List the images under ``folder`` and hash them.

    The hash covers each file's relative path and its bytes, in sorted path order, so renaming,
    adding, removing or editing an image changes it.

    Raises:
        DatasetError: the folder does not exist or holds no image files.
    """
    root = Path(folder)
    try:
        files = list_images(root)
    except NotADirectoryError:
        raise DatasetError(f"image folder not found: {root}") from None
    if not files:
        raise DatasetError(f"{root}: no image files (expected .jpg/.png/.bmp/.tif, searched recursively)")
    h = hashlib.sha256()
    for p in files:
        h.update(p.relative_to(root).as_posix().encode("utf-8") + b"\0")
        fh = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                fh.update(chunk)
        h.update(fh.digest())
    return ImageList(root, tuple(files), h.hexdigest())


def evenly_spaced(n: int, k: int | None) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``k`` is None or >= n)."""
    if k is None or k >= n:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, k).round()})


@dataclass
class Preprocessed:
    """Preprocessed images on disk: ``array`` is ``[n,3,H,W] float32`` (a memmap), ``files`` the
    images it holds (row order), ``skipped`` the files that could not be decoded."""

    array: np.ndarray
    files: list[Path]
    skipped: list[Path] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def batches(self, batch: int, indices: Sequence[int] | None = None) -> Iterator[np.ndarray]:
        """Yield C-contiguous ``[b,3,H,W] float32`` copies of the rows (all, or ``indices``)."""
        idx = list(range(len(self.files))) if indices is None else list(indices)
        for s in range(0, len(idx), batch):
            yield np.ascontiguousarray(self.array[idx[s:s + batch]])

    def close(self) -> None:
        """Drop the memmap and its temporary file."""
        self.array = np.empty((0,), np.float32)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def preprocess_folder(
    files: Sequence[Path],
    spec: ModelSpec,
    *,
    in_memory: bool = False,
    progress: bool = False,
    desc: str = "preprocess",
) -> Preprocessed:
    """Decode and preprocess ``files`` once; corrupt files are skipped and listed.

    Args:
        files: image paths.
        spec: the model spec (size, resize, channel order, scale/mean/std).
        in_memory: keep the array in RAM instead of a temporary memmap (small sets).
        progress: show a tqdm bar on stderr.

    Returns:
        :class:`Preprocessed` with one ``[3,H,W] float32`` row per usable image.
    """
    from tqdm import tqdm

    H, W = spec.input_size
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if in_memory or not files:
        arr = np.empty((max(1, len(files)), 3, H, W), np.float32)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="edgeqc-pre-")
        arr = np.lib.format.open_memmap(str(Path(tmp.name) / "x.npy"), mode="w+", dtype=np.float32,
                                        shape=(len(files), 3, H, W))
    used: list[Path] = []
    skipped: list[Path] = []
    for p in tqdm(files, desc=desc, unit="img", disable=None if progress else True, leave=False):
        frame = read_image(p, spec.channel_order)
        if frame is None:
            skipped.append(p)
            continue
        preprocess(frame, spec, out=arr[len(used)])
        used.append(p)
    if skipped:
        log.warning("%d of %d image(s) could not be read and were skipped", len(skipped), len(files))
    return Preprocessed(arr[:len(used)], used, skipped, tmp)


@dataclass(frozen=True)
class LabelledFolder:
    """A labelled image folder: ``files[i]`` has true class index ``y[i]`` into ``labels``."""

    root: Path
    labels: tuple[str, ...]
    files: tuple[Path, ...]
    y: np.ndarray

    def counts(self) -> dict[str, int]:
        c = np.bincount(self.y, minlength=len(self.labels)) if self.y.size else np.zeros(len(self.labels), int)
        return {lab: int(n) for lab, n in zip(self.labels, c)}


def scan_labelled(folder: str | Path, labels: Sequence[str]) -> LabelledFolder:
    """Read a labelled folder: ``<folder>/<class name>/**/<image>``.

    Folder names must be model labels (exact match); images directly in ``folder`` or in a
    folder with another name are an error, so a typo never silently drops a class.

    Raises:
        DatasetError: folder missing or empty, unknown class folder names (listed with the model's
            labels), or images outside any class folder.
    """
    root = Path(folder)
    try:
        files = list_images(root)
    except NotADirectoryError:
        raise DatasetError(f"labelled folder not found: {root}") from None
    if not files:
        raise DatasetError(f"{root}: no images (expected one subfolder per class: {root}/<label>/<image>)")
    index = {lab: i for i, lab in enumerate(labels)}
    unknown: dict[str, int] = {}
    loose: list[str] = []
    ys: list[int] = []
    for p in files:
        parts = p.relative_to(root).parts
        if len(parts) < 2:
            loose.append(parts[0])
            continue
        if parts[0] not in index:
            unknown[parts[0]] = unknown.get(parts[0], 0) + 1
            continue
        ys.append(index[parts[0]])
    if unknown:
        desc = ", ".join(f"{k!r} ({n} images)" for k, n in sorted(unknown.items()))
        raise DatasetError(f"{root}: class folder(s) {desc} are not model labels {list(labels)}; rename them "
                           "to the model's labels (one subfolder per class)")
    if loose:
        raise DatasetError(f"{root}: {len(loose)} image(s) outside a class folder (e.g. {loose[0]!r}); expected "
                           f"{root}/<label>/<image> with labels {list(labels)}")
    return LabelledFolder(root, tuple(labels), tuple(files), np.array(ys, dtype=np.int64))
