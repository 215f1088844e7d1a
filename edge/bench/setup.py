"""What ``edgeqc bench`` runs on: model, images, settings and the sizes of each measurement.

Defaults: the shared mt-effnet-lite0 over the shared val set when ``../shared`` is there (relative
to the current folder, else beside this package's checkout), with the model card's preprocessing
as in ``examples/magnetic-tile-val.toml``; else the built-in demo model over rendered demo parts. ``--quick`` shrinks every measurement to a
correctness run (tests); ``--duration`` sets the trigger-mode run (the soak).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge import checkout_path
from edge.settings import Settings, load_settings

SHARED = checkout_path("../shared")  # beside the checkout run from, else beside this package
SHARED_EFFNET = SHARED / "models" / "mt-effnet-lite0" / "model.onnx"
SHARED_VAL = SHARED / "datasets" / "magnetic-tile" / "val"
SHARED_CALIB = SHARED / "datasets" / "magnetic-tile" / "calib"

EFFNET_CARD: dict[str, Any] = {
    "resize": "stretch", "interpolation": "pillow_bilinear", "channel_order": "RGB",
    "scale": 1.0 / 255.0, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
}
"""mt-effnet-lite0 MODEL_CARD.md preprocessing (its ONNX carries no metadata)."""


WORKDIR_PREFIX = "edgeqc-bench-"
"""Name prefix of the per-run work folder under :func:`tempfile.gettempdir`."""


class BenchSetupError(ValueError):
    """The bench cannot run with these arguments (the message names the option and the value)."""


@dataclass
class Sizes:
    """How much each item measures.

    Attributes:
        rounds: interleaved rounds of item 3 (FP32 vs INT8) and item 5 (no-op).
        pipeline_rounds: interleaved rounds of item 1 (bare vs pipeline). Many short rounds, not a
            few long ones: on these guests one round's ratio scatters by 15-20 % (std) whatever
            its length (200, 50 or 20 frames: 0.15, 0.18, 0.21 in one session), so the median of
            9 rounds moved by +-6 % between runs; 60 rounds narrow that 2.6-fold.
        frames: frames per round and side in item 1. Each block is timed in its steady state
            (``steady_s``: from the ``STEADY_SKIP``-th completion to the last, both sides), so
            its fill does not weigh on short blocks.
        noop_frames: frames per round in item 5 (no-op backend).
        precision_runs: batch-1 runs per round and model in item 3.
        duration_s: trigger-mode run length (item 2, RSS soak), s.
        block_s: the trigger run is cut into blocks of this length, each followed by a paced bare
            block (together at most ``trigger.BARE_TOTAL_MAX_S`` of bare blocks), s.
        rate_hz: trigger rate, parts/s.
        calib_images: images used when the bench has to make an INT8 model itself.
        quick: the ``--quick`` sizes (a correctness run: targets are not judged).
    """

    rounds: int = 9
    pipeline_rounds: int = 60
    frames: int = 40
    noop_frames: int = 300
    precision_runs: int = 40
    duration_s: float = 60.0
    block_s: float = 10.0
    rate_hz: float = 20.0
    calib_images: int = 100
    quick: bool = False

    @classmethod
    def quick_sizes(cls) -> Sizes:
        return cls(rounds=2, pipeline_rounds=2, frames=6, noop_frames=20, precision_runs=4, duration_s=2.0, block_s=1.0,
                   calib_images=16, quick=True)


@dataclass
class BenchSetup:
    """Resolved inputs of one bench run."""

    model: Path
    images: Path
    settings: Settings
    sizes: Sizes
    labelled: bool
    workdir: Path
    """Scratch folder (reject archive) made by :func:`resolve_setup` once every check passed;
    the caller removes it."""
    int8: Path | None = None
    calib: Path | None = None
    cache_dir: Path = Path(".edgeqc-cache")
    notes: list[str] = field(default_factory=list)


def _demo_defaults() -> tuple[Path, Path]:
    from edge.backends import demo_model_path
    from edge.demo.synth import demo_folder

    return demo_model_path(), demo_folder(n=60)


def _onnx_problem(path: Path) -> tuple[str | None, str | None]:
    """(precision, None) of a readable ONNX file, else (None, why it cannot be read)."""
    from edge.onnx_info import OnnxReadError, read_onnx_info

    if not path.is_file():
        return None, "no such file" if not path.exists() else "not a file"
    try:
        return read_onnx_info(path).precision, None
    except OnnxReadError as exc:
        why = str(exc)
        return None, why.removeprefix(f"{path}: ")
    except OSError as exc:
        return None, f"cannot read it ({exc.strerror or exc})"


def _positive_finite(value: float | None, option: str, unit: str) -> float | None:
    if value is None:
        return None
    if not (math.isfinite(value) and value > 0):
        raise BenchSetupError(f"{option} {value}: expected a finite number > 0 {unit}")
    return float(value)


def resolve_setup(*, model: str | None, images: str | None, config: str | None, quick: bool,
                  duration: float | None, rate: float | None, threads: int | None, int8: str | None,
                  calib: str | None, pass_classes: list[str] | None, cache_dir: str | None) -> BenchSetup:
    """Fill in the defaults (see module docstring) and check every argument before anything runs.

    The work folder (``BenchSetup.workdir``, under :func:`tempfile.gettempdir`) is made only
    when every check passed; the caller removes it.

    Raises:
        BenchSetupError: a missing or unreadable model, a missing images folder, an ``--int8``
            model that is missing, unreadable or not Q/DQ, ``--rate``/``--duration`` not finite
            and > 0, ``--threads`` < 0 or more than the usable CPUs, or pass classes that are
            not labels.
        edge.settings.ConfigError: a bad ``--config`` file.
        edge.model_spec.ModelSpecError: the model and settings give no usable spec.
    """
    notes: list[str] = []
    sizes = Sizes.quick_sizes() if quick else Sizes()
    d = _positive_finite(duration, "--duration", "s")
    if d is not None:
        sizes.duration_s = d
    r = _positive_finite(rate, "--rate", "parts/s")
    if r is not None:
        sizes.rate_hz = r
    sizes.block_s = min(sizes.block_s, sizes.duration_s)
    if threads is not None:
        from edge.backends.onnxruntime import usable_cpus

        cpus = usable_cpus()
        if threads < 0:
            raise BenchSetupError(f"--threads {threads}: expected 0 (auto) or 1..{cpus}")
        if threads > cpus:
            raise BenchSetupError(f"--threads {threads}: this machine has {cpus} usable CPUs; expected 0 (auto) "
                                  f"or 1..{cpus}")
    base = load_settings(config) if config else load_settings()
    cfg_model = base.model.path if config and base.model.path != "demo" else None
    model_opt = "--model" if model else "model.path (--config)"
    model_path: Path
    images_path: Path | None
    if model or cfg_model:
        model_path = Path(model or cfg_model or "")
        _, why = _onnx_problem(model_path)  # before asking for --images: a missing model comes first
        if why:
            raise BenchSetupError(f"{model_opt} {model_path}: {why}")
        images_path = Path(images) if images else (Path(base.camera.source) if config else None)
        if images_path is None:
            if model_path.resolve() == SHARED_EFFNET.resolve() and SHARED_VAL.is_dir():
                images_path = SHARED_VAL
            else:
                raise BenchSetupError(f"{model_opt} {model_path}: also give --images DIR (a folder of images; "
                                      "class subfolders named like the labels for the accuracy item)")
    elif SHARED_EFFNET.is_file() and SHARED_VAL.is_dir():
        model_path, images_path = SHARED_EFFNET, Path(images) if images else SHARED_VAL
        notes.append(f"default model: the shared mt-effnet-lite0 ({SHARED_EFFNET}) over {images_path}")
    else:
        model_path, demo_images = _demo_defaults()
        images_path = Path(images) if images else demo_images
        notes.append(f"../shared not found (looked at {SHARED}): the built-in demo model over rendered demo parts")
        _, why = _onnx_problem(model_path)
        if why:
            raise BenchSetupError(f"{model_opt} {model_path}: {why}")
    if not images_path.is_dir():
        raise BenchSetupError(f"--images {images_path}: no such folder")
    if int8:
        precision, why = _onnx_problem(Path(int8))
        if why:
            raise BenchSetupError(f"--int8 {int8}: {why}; expected an INT8 Q/DQ ONNX model")
        if precision != "int8":
            raise BenchSetupError(f"--int8 {int8}: expected an INT8 Q/DQ ONNX model (QuantizeLinear/"
                                  f"DequantizeLinear nodes), this one has none (reads as {precision})")

    model_over: dict[str, Any] = {"path": str(model_path)}
    if not config and model_path.resolve() == SHARED_EFFNET.resolve():
        model_over.update(EFFNET_CARD)
    from edge.backends.onnxruntime import intra_op_threads

    # resolved here (0 = auto) so every session gets the same number and the JSON says which
    model_over["intra_op_threads"] = intra_op_threads(base.model.intra_op_threads if threads is None else threads)
    model_settings = base.model.model_copy(update=model_over)
    decision: dict[str, Any] = base.decision.model_dump()
    if pass_classes:
        decision["pass_classes"] = pass_classes
    elif not config and model_path.resolve() == SHARED_EFFNET.resolve():
        decision.update(pass_classes=["free"], min_pass_probability=0.0)  # as the model card counts
    decision_settings = base.decision.model_validate(decision)
    from edge.model_spec import resolve_spec

    spec = resolve_spec(model_path, model_settings)
    bad = [p for p in decision_settings.pass_classes if p not in spec.labels]
    if bad:
        raise BenchSetupError(f"pass class(es) {bad} are not labels of {model_path.name} {list(spec.labels)}; "
                              "give --pass-class LABEL (or decision.pass_classes in --config)")
    subdirs = {p.name for p in images_path.iterdir() if p.is_dir()}
    labelled = bool(subdirs) and subdirs <= set(spec.labels)
    calib_path = Path(calib) if calib else (SHARED_CALIB if model_path.resolve() == SHARED_EFFNET.resolve()
                                             and SHARED_CALIB.is_dir() else None)
    work = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))  # last: every check above has passed
    try:
        settings = base.model_copy(update={
            "model": model_settings,
            "decision": decision_settings,
            "camera": base.camera.model_copy(update={"source": str(images_path), "loop": True}),
            "zmq": base.zmq.model_copy(update={"enabled": True, "endpoint": "tcp://127.0.0.1:*"}),
            "archive": base.archive.model_copy(update={"path": str(work / "archive")}),
            "metrics": base.metrics.model_copy(update={"port": 0, "host": "127.0.0.1"}),
            "plc": base.plc.model_copy(update={"enabled": True, "port": "demo", "mode": "trigger",
                                               "deadline_ms": max(base.plc.deadline_ms, 1000.0)}),
        })
        return BenchSetup(model=model_path, images=images_path, settings=settings, sizes=sizes, labelled=labelled,
                          workdir=work, int8=Path(int8) if int8 else None, calib=calib_path,
                          cache_dir=Path(cache_dir or ".edgeqc-cache"), notes=notes)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
