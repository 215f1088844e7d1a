"""The model spec: class names, input size and the exact preprocessing a classifier expects.

Sources, per field, first one that has it wins (see docs/backends.md):

1. the config (:class:`edge.settings.ModelSettings`, fields that are not ``None``);
2. the model's own metadata: edgeqc's keys (``edgeqc.<field>``, written by
   :func:`spec_to_metadata` into a calibrated ONNX, or the ``model_spec`` dict of an engine
   sidecar), then the keys Ultralytics writes for classification exports (``names``,
   ``imgsz``, ``task``; an Ultralytics export also implies Ultralytics' preprocessing:
   shorter-side resize + center crop, Pillow bilinear, RGB, scale 1/255, no mean/std —
   ``ultralytics/data/augment.py`` ``classify_transforms``, 8.4.190, see the mt-yolo-cls card);
3. ``labels.txt`` beside the model (labels only, one per line);
4. the graph itself (I/O names, fixed input size, batch axis, a final Softmax);
5. defaults: stretch, ``pillow_bilinear``, RGB, scale 1/255, mean 0, std 1.

Labels and the input size have no default: missing or inconsistent values raise
:class:`ModelSpecError` naming the source and the numbers.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from edge.onnx_info import OnnxInfo
    from edge.settings import ModelSettings

Resize = Literal["stretch", "center_crop", "letterbox"]
Interpolation = Literal["pillow_bilinear", "area", "linear", "nearest", "cubic"]
ChannelOrder = Literal["RGB", "BGR"]
OutputKind = Literal["logits", "probabilities"]

RESIZE_MODES: tuple[str, ...] = get_args(Resize)
INTERPOLATIONS: tuple[str, ...] = get_args(Interpolation)
CHANNEL_ORDERS: tuple[str, ...] = get_args(ChannelOrder)
OUTPUT_KINDS: tuple[str, ...] = get_args(OutputKind)

METADATA_PREFIX = "edgeqc."
ENGINE_SUFFIXES = frozenset({".engine", ".plan", ".trt"})
LABELS_FILE = "labels.txt"

DEFAULTS: dict[str, Any] = {
    "resize": "stretch",
    # Pillow's antialiased bilinear: what Pillow/torchvision training pipelines use; reproduces
    # the mt-effnet-lite0 card exactly (docs/preprocessing.md).
    "interpolation": "pillow_bilinear",
    "channel_order": "RGB",
    "scale": 1.0 / 255.0,
    "mean": (0.0, 0.0, 0.0),
    "std": (1.0, 1.0, 1.0),
}
# Ultralytics classification preprocessing (classify_transforms, 8.4.190).
ULTRALYTICS_PREPROCESSING: dict[str, Any] = {
    "resize": "center_crop",
    "interpolation": "pillow_bilinear",
    "channel_order": "RGB",
    "scale": 1.0 / 255.0,
    "mean": (0.0, 0.0, 0.0),
    "std": (1.0, 1.0, 1.0),
}


class ModelSpecError(ValueError):
    """The model spec is missing or inconsistent; the message names the source and the numbers."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to feed a classifier and read its output.

    Attributes:
        labels: class names in output index order (``len == C``).
        input_name / output_name: graph tensor names.
        input_size: ``(H, W)`` in px of the ``[N,3,H,W] float32`` input.
        resize: ``stretch`` (to H×W, aspect not kept), ``center_crop`` (scale so the image
            covers H×W keeping aspect — for a square input the shorter side becomes H — then
            crop the centre), ``letterbox`` (scale to fit inside, pad with gray 114).
        interpolation: ``pillow_bilinear`` (Pillow ``Image.BILINEAR``, antialiased when
            downscaling), or OpenCV ``area`` / ``linear`` / ``nearest`` / ``cubic``.
        channel_order: ``RGB`` or ``BGR`` — the order of the input's 3 channels.
        scale, mean, std: ``x = (pixel * scale - mean) / std`` per channel (model channel
            order); ``scale`` refers to 8-bit values (16-bit frames use ``scale * 255/65535``).
        output: ``logits`` (softmax applied by the backend) or ``probabilities``.
        dynamic_batch: the batch axis is dynamic.
        max_batch: fixed batch size of a static model (or an engine profile's maximum);
            ``None`` = no limit from the model.
    """

    labels: tuple[str, ...]
    input_name: str = "input"
    output_name: str = "output"
    input_size: tuple[int, int] = (224, 224)
    resize: Resize = "stretch"
    interpolation: Interpolation = "pillow_bilinear"
    channel_order: ChannelOrder = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    output: OutputKind = "logits"
    dynamic_batch: bool = True
    max_batch: int | None = None

    def __post_init__(self) -> None:
        # Normalise sequences to tuples (JSON gives lists) and validate every field.
        set_ = object.__setattr__
        set_(self, "labels", tuple(self.labels))
        set_(self, "input_size", tuple(int(v) for v in self.input_size))
        set_(self, "mean", tuple(float(v) for v in self.mean))
        set_(self, "std", tuple(float(v) for v in self.std))
        set_(self, "scale", float(self.scale))
        problems = _validate(self)
        if problems:
            raise ModelSpecError("invalid model spec: " + "; ".join(problems))

    @property
    def num_classes(self) -> int:
        """``C``, the number of labels."""
        return len(self.labels)

    @property
    def height(self) -> int:
        return self.input_size[0]

    @property
    def width(self) -> int:
        return self.input_size[1]

    def describe(self) -> str:
        """One-line human summary (for logs and ``edgeqc info``)."""
        h, w = self.input_size
        return (f"{self.num_classes} classes {list(self.labels)}, input {self.input_name!r} "
                f"[{'N' if self.dynamic_batch else self.max_batch},3,{h},{w}] {self.channel_order}, "
                f"{self.resize}/{self.interpolation}, scale {self.scale:.6g}, mean {list(self.mean)}, "
                f"std {list(self.std)}, output {self.output_name!r} = {self.output}")


def _validate(spec: ModelSpec) -> list[str]:
    p: list[str] = []
    if not spec.labels:
        p.append("labels is empty (expected one name per output class)")
    elif not all(isinstance(x, str) and x.strip() for x in spec.labels):
        p.append(f"labels {list(spec.labels)!r} must be non-empty strings")
    elif len(set(spec.labels)) != len(spec.labels):
        dup = sorted({x for x in spec.labels if spec.labels.count(x) > 1})
        p.append(f"labels contain duplicates {dup}")
    if len(spec.input_size) != 2 or min(spec.input_size) < 1:
        p.append(f"input_size {spec.input_size} must be (H, W) with H, W >= 1")
    for name, value, allowed in (("resize", spec.resize, RESIZE_MODES),
                                 ("interpolation", spec.interpolation, INTERPOLATIONS),
                                 ("channel_order", spec.channel_order, CHANNEL_ORDERS),
                                 ("output", spec.output, OUTPUT_KINDS)):
        if value not in allowed:
            p.append(f"{name} = {value!r}, expected one of {list(allowed)}")
    if not (math.isfinite(spec.scale) and spec.scale > 0):
        p.append(f"scale = {spec.scale}, expected a finite value > 0")
    if len(spec.mean) != 3 or not all(math.isfinite(v) for v in spec.mean):
        p.append(f"mean = {spec.mean}, expected 3 finite values")
    if len(spec.std) != 3 or not all(math.isfinite(v) and v > 0 for v in spec.std):
        p.append(f"std = {spec.std}, expected 3 finite values > 0")
    if not spec.input_name or not spec.output_name:
        p.append("input_name and output_name must be non-empty")
    if spec.max_batch is not None and spec.max_batch < 1:
        p.append(f"max_batch = {spec.max_batch}, expected >= 1 or None")
    return p


# ---------------------------------------------------------------------------------------------
# dict / metadata round trip


def spec_to_dict(spec: ModelSpec) -> dict[str, Any]:
    """JSON-ready dict of every field (tuples become lists). Inverse: :func:`spec_from_dict`."""
    d = asdict(spec)
    for k in ("labels", "input_size", "mean", "std"):
        d[k] = list(d[k])
    return d


def spec_from_dict(data: Mapping[str, Any], source: str = "spec dict") -> ModelSpec:
    """Build a :class:`ModelSpec` from :func:`spec_to_dict` output.

    Raises:
        ModelSpecError: a key is missing or unknown, or a value is invalid (names ``source``).
    """
    names = {f.name for f in fields(ModelSpec)}
    unknown = sorted(set(data) - names)
    missing = sorted(names - set(data))
    if unknown or missing:
        raise ModelSpecError(f"{source}: model spec keys do not match: missing {missing}, unknown {unknown}")
    try:
        return ModelSpec(**{k: data[k] for k in names})
    except (TypeError, ValueError) as exc:
        raise ModelSpecError(f"{source}: {exc}") from None


def spec_to_metadata(spec: ModelSpec) -> dict[str, str]:
    """ONNX ``metadata_props`` entries that carry the whole spec: ``edgeqc.<field>`` = JSON value.

    Write these into a calibrated/quantized model so it resolves to the same spec."""
    return {METADATA_PREFIX + k: json.dumps(v) for k, v in spec_to_dict(spec).items()}


def _edgeqc_fields(metadata: Mapping[str, str], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    names = {f.name for f in fields(ModelSpec)}
    for key, raw in metadata.items():
        if not key.startswith(METADATA_PREFIX):
            continue
        name = key[len(METADATA_PREFIX):]
        if name not in names:
            continue  # keys of later versions are ignored here; spec_from_dict is strict
        try:
            out[name] = json.loads(raw)
        except json.JSONDecodeError:
            raise ModelSpecError(f"{source}: metadata {key} = {raw!r} is not valid JSON") from None
    return out


def spec_from_metadata(metadata: Mapping[str, str], source: str = "ONNX metadata") -> ModelSpec:
    """Inverse of :func:`spec_to_metadata`: all ``edgeqc.<field>`` keys must be present.

    Raises:
        ModelSpecError: keys missing or values invalid.
    """
    return spec_from_dict(_edgeqc_fields(metadata, source), source)


# ---------------------------------------------------------------------------------------------
# sources


def _parse_literal(key: str, raw: str, source: str) -> Any:
    try:
        return ast.literal_eval(raw)  # literals only, never eval
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ModelSpecError(f"{source}: metadata {key} = {raw!r} is not a Python literal") from None


def _ultralytics_labels(raw: str, source: str) -> tuple[str, ...]:
    names = _parse_literal("names", raw, source)
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise ModelSpecError(f"{source}: metadata names keys must be class indices, got {raw!r}") from None
        if keys != list(range(len(keys))):
            raise ModelSpecError(f"{source}: metadata names must have indices 0..{len(keys) - 1}, got {keys}")
        by_index = {int(k): v for k, v in names.items()}
        labels = [by_index[i] for i in keys]
    elif isinstance(names, (list, tuple)):
        labels = list(names)
    else:
        raise ModelSpecError(f"{source}: metadata names = {raw!r}, expected a dict {{index: name}} or a list")
    if not all(isinstance(x, str) for x in labels):
        raise ModelSpecError(f"{source}: metadata names values must be strings, got {labels!r}")
    return tuple(labels)


def _ultralytics_imgsz(raw: str, source: str) -> tuple[int, int]:
    v = _parse_literal("imgsz", raw, source)
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return (int(v[0]), int(v[1]))
    raise ModelSpecError(f"{source}: metadata imgsz = {raw!r}, expected an int or [height, width]")


def is_ultralytics(metadata: Mapping[str, str]) -> bool:
    """True when ``metadata_props`` look like an Ultralytics export (``names`` plus ``imgsz``,
    ``task`` or author Ultralytics)."""
    return "names" in metadata and (
        "imgsz" in metadata or "task" in metadata or metadata.get("author", "").startswith("Ultralytics"))


def ultralytics_fields(metadata: Mapping[str, str], source: str) -> dict[str, Any]:
    """Spec fields implied by Ultralytics metadata (labels, input size, its preprocessing).

    Raises:
        ModelSpecError: ``task`` is present and not ``classify``, or names/imgsz do not parse.
    """
    task = metadata.get("task")
    if task is not None and task != "classify":
        raise ModelSpecError(f"{source}: metadata task = {task!r}; edgeqc runs image classifiers only "
                             "(an Ultralytics export must have task 'classify')")
    if not is_ultralytics(metadata):
        return {}
    out: dict[str, Any] = dict(ULTRALYTICS_PREPROCESSING)
    out["labels"] = _ultralytics_labels(metadata["names"], source)
    if "imgsz" in metadata:
        out["input_size"] = _ultralytics_imgsz(metadata["imgsz"], source)
    return out


def read_labels_file(path: str | Path) -> tuple[str, ...]:
    """Labels from a text file, one per line in output index order; blank lines are skipped.

    Raises:
        ModelSpecError: the file cannot be read as UTF-8 text.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelSpecError(f"{p}: cannot read labels ({exc})") from None
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _config_fields(settings: ModelSettings | None) -> dict[str, Any]:
    if settings is None:
        return {}
    out: dict[str, Any] = {}
    for name in ("labels", "input_size", "resize", "interpolation", "channel_order", "scale", "mean", "std"):
        v = getattr(settings, name, None)
        if v is not None:
            out[name] = tuple(v) if isinstance(v, (list, tuple)) else v
    if getattr(settings, "output", "auto") != "auto":
        out["output"] = settings.output
    return out


# ---------------------------------------------------------------------------------------------
# resolution


@dataclass(frozen=True)
class _Graph:
    """I/O facts of a model (ONNX graph or engine sidecar)."""

    input_name: str
    output_name: str
    batch: int | None  # fixed batch, None = dynamic
    hw: tuple[int | None, int | None]  # fixed H/W, None = dynamic
    channels: int | None
    classes: int | None
    output: str | None  # "probabilities" when a final Softmax was found, else None (unknown)
    dims_text: str  # for messages, e.g. "[N,3,224,224]"


def _fixed(d: object) -> int | None:
    return int(d) if isinstance(d, int) and not isinstance(d, bool) and d > 0 else None


def _graph_from_onnx(info: OnnxInfo) -> _Graph:
    src = str(info.path)
    if len(info.inputs) != 1:
        raise ModelSpecError(f"{src}: expected 1 input [N,3,H,W], the graph has {len(info.inputs)}: "
                             f"{[i.name for i in info.inputs]}")
    if len(info.outputs) != 1:
        raise ModelSpecError(f"{src}: expected 1 output [N,C], the graph has {len(info.outputs)}: "
                             f"{[o.name for o in info.outputs]}")
    i, o = info.inputs[0], info.outputs[0]
    if i.dtype != "float32":
        raise ModelSpecError(f"{src}: input {i.name!r} is {i.dtype}, expected float32")
    if len(i.shape) != 4:
        raise ModelSpecError(f"{src}: input {i.name!r} has shape {list(i.shape)}, expected [N,3,H,W] (rank 4)")
    if len(o.shape) != 2:
        raise ModelSpecError(f"{src}: output {o.name!r} has shape {list(o.shape)}, expected [N,C] (rank 2)")
    ch = _fixed(i.shape[1])
    if ch is not None and ch != 3:
        raise ModelSpecError(f"{src}: input {i.name!r} has {ch} channels ({list(i.shape)}), expected 3")
    dims = "[" + ",".join(str(d) if d is not None else "?" for d in i.shape) + "]"
    return _Graph(i.name, o.name, _fixed(i.shape[0]), (_fixed(i.shape[2]), _fixed(i.shape[3])), ch,
                  _fixed(o.shape[1]), "probabilities" if info.softmax_output else None, dims)


def _graph_from_sidecar(sidecar: Mapping[str, Any], src: str) -> _Graph | None:
    ins, outs = sidecar.get("inputs"), sidecar.get("outputs")
    if not ins or not outs:
        return None
    try:
        i, o = ins[0], outs[0]
        ishape, oshape = list(i["shape"]), list(o["shape"])
        name_i, name_o = str(i["name"]), str(o["name"])
    except (KeyError, TypeError, IndexError):
        raise ModelSpecError(f"{src}: inputs/outputs entries need name and shape") from None
    if len(ishape) != 4 or len(oshape) != 2:
        raise ModelSpecError(f"{src}: engine input {ishape} / output {oshape}, expected [N,3,H,W] / [N,C]")
    fx = [(_fixed(d) if isinstance(d, int) and d >= 0 else None) for d in ishape]
    dims = "[" + ",".join(str(d) for d in ishape) + "]"
    return _Graph(name_i, name_o, fx[0], (fx[2], fx[3]), fx[1],
                  _fixed(oshape[1]) if isinstance(oshape[1], int) else None, None, dims)


def resolve_spec(model_path: str | Path, settings: ModelSettings | None = None) -> ModelSpec:
    """Resolve the :class:`ModelSpec` of an ONNX model or TensorRT engine (see module docstring).

    Args:
        model_path: ``.onnx`` file, or ``.engine``/``.plan`` with its sidecar ``<engine>.json``.
        settings: the ``[model]`` settings; ``None`` = no config overrides.

    Raises:
        FileNotFoundError: the model file does not exist.
        ModelSpecError: labels missing or not matching the output's class count, unknown input
            size for a model with dynamic H/W, config contradicting the graph, bad metadata,
            an engine without (or with an unusable) sidecar.
        OnnxReadError: the file is not ONNX (a ``ValueError``).
    """
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    sources: list[tuple[str, dict[str, Any]]] = [("config (model.*)", _config_fields(settings))]
    if path.suffix.lower() in ENGINE_SUFFIXES:
        from edge.backends.engine_sidecar import EngineCompatError, read_sidecar, sidecar_path

        src = f"engine sidecar {sidecar_path(path)}"
        try:
            sidecar = read_sidecar(path)
        except EngineCompatError as exc:
            raise ModelSpecError(str(exc)) from None
        ms = sidecar.get("model_spec")
        if not isinstance(ms, Mapping):
            raise ModelSpecError(f"{src}: key model_spec missing or not an object (rebuild with edgeqc build)")
        graph = _graph_from_sidecar(sidecar, src)
        if graph is None:
            raise ModelSpecError(f"{src}: keys inputs/outputs missing (rebuild with edgeqc build)")
        built_output = ms.get("output") if ms.get("output") in OUTPUT_KINDS else None
        graph = _Graph(graph.input_name, graph.output_name, graph.batch, graph.hw, graph.channels,
                       graph.classes, built_output, graph.dims_text)
        sources.append((src, {k: v for k, v in ms.items() if k != "output"}))
    else:
        from edge.onnx_info import read_onnx_info

        info = read_onnx_info(path)
        graph = _graph_from_onnx(info)
        md_src = f"{path} metadata_props"
        sources.append((md_src + " (edgeqc.*)", _edgeqc_fields(info.metadata, md_src)))
        sources.append((md_src + " (Ultralytics)", ultralytics_fields(info.metadata, md_src)))
    labels_file = path.parent / LABELS_FILE
    if labels_file.is_file():
        sources.append((f"labels file {labels_file}", {"labels": read_labels_file(labels_file)}))

    def pick(name: str) -> tuple[Any, str] | None:
        for src_name, values in sources:
            if name in values and values[name] is not None:
                return values[name], src_name
        return None

    model_name = f"model {path.name}"
    # labels
    got = pick("labels")
    if got is None:
        raise ModelSpecError(
            f"{path}: no class labels: set model.labels in the config, add 'names' or 'edgeqc.labels' to "
            f"the ONNX metadata_props, or put a {LABELS_FILE} (one label per line, output order) beside the model")
    labels, labels_src = tuple(got[0]), got[1]
    if graph.classes is not None and len(labels) != graph.classes:
        raise ModelSpecError(
            f"{labels_src} has {len(labels)} labels {list(labels)} but {model_name} output "
            f"{graph.output_name!r} has {graph.classes} classes ([N,{graph.classes}])")
    # input size
    hw = graph.hw
    got = pick("input_size")
    if got is not None:
        size, size_src = (int(got[0][0]), int(got[0][1])), got[1]
        for axis, want, have in (("height", size[0], hw[0]), ("width", size[1], hw[1])):
            if have is not None and want != have:
                raise ModelSpecError(f"{size_src} gives input_size {list(size)} but {model_name} input "
                                     f"{graph.input_name!r} {graph.dims_text} has fixed {axis} {have}")
    elif hw[0] is not None and hw[1] is not None:
        size = (hw[0], hw[1])
    else:
        raise ModelSpecError(
            f"{model_name}: input {graph.input_name!r} {graph.dims_text} has dynamic height/width and no "
            "input size is known: set model.input_size = [height, width] in the config "
            "(or metadata imgsz / edgeqc.input_size)")
    # output kind: config, else the graph (final Softmax), else metadata, else logits
    out_cfg = pick("output")
    if out_cfg is not None and out_cfg[1].startswith("config"):
        output = out_cfg[0]
    elif graph.output is not None:
        output = graph.output
    elif out_cfg is not None:
        output = out_cfg[0]
    else:
        output = "logits"

    values: dict[str, Any] = {}
    for name in ("resize", "interpolation", "channel_order", "scale", "mean", "std"):
        got = pick(name)
        values[name] = got[0] if got is not None else DEFAULTS[name]
    max_batch = graph.batch
    if max_batch is None:
        mb = pick("max_batch")
        max_batch = int(mb[0]) if mb is not None and not mb[1].startswith("config") else None
    try:
        return ModelSpec(labels=labels, input_name=graph.input_name, output_name=graph.output_name,
                         input_size=size, output=output, dynamic_batch=graph.batch is None,
                         max_batch=max_batch, **values)
    except ModelSpecError as exc:
        raise ModelSpecError(f"{path}: {exc}") from None
