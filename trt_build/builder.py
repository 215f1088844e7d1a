"""TensorRT engine builder from ONNX, as small composable steps (10.3 and 11.x Python API).

``tensorrt`` is imported lazily inside each step, so the rest of edgeqc (and ``edgeqc build``
up to the engine step) works where TensorRT is not installed; :func:`import_tensorrt` raises
:class:`TensorRTMissing` there.

Steps (Polygraphy-style, each usable on its own):

1. :func:`create_network` — builder + network. Q/DQ (INT8) and FP32 models use a **strongly
   typed** network (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: precisions come from the
   ONNX; TensorRT "Explicit Quantization": no precision flags). On TensorRT 11 the flag is
   deprecated and always on, so the same call works on both. FP16 from an FP32 ONNX needs the
   weakly typed network + ``BuilderFlag.FP16``, which exists in 10.x only (11 removed it).
2. :func:`parse_onnx` — ``OnnxParser.parse_from_file``; on failure *every* parser error is
   reported (node, operator, code, description).
3. :func:`configure` — workspace limit, optimization profile (:mod:`trt_build.profile`) when an
   input is dynamic, timing cache file, optional DLA core with GPU fallback, FP16 flag (10.x).
4. :func:`serialize` — ``build_serialized_network``; ``None`` -> :class:`EngineBuildError` with
   the errors TensorRT logged.

:func:`build_plan` runs 1-4 and returns a :class:`BuiltPlan` (plan bytes + I/O tensors), and
writes the timing cache back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal

from calibration.cache import write_bytes_atomic
from trt_build.profile import ProfileShape, choose_profile, onnx_input_shapes

if TYPE_CHECKING:
    import tensorrt as trt

Precision = Literal["int8", "fp16", "fp32"]
PRECISIONS: tuple[str, ...] = ("int8", "fp16", "fp32")


class TensorRTMissing(RuntimeError):
    """The ``tensorrt`` Python package cannot be imported on this machine."""


class OnnxParseError(RuntimeError):
    """TensorRT's ONNX parser rejected the model; the message lists every parser error."""


class EngineBuildError(RuntimeError):
    """TensorRT could not build or configure the engine; the message says why."""


def import_tensorrt() -> ModuleType:
    """``import tensorrt``, or :class:`TensorRTMissing` naming the import error."""
    try:
        import tensorrt
    except ImportError as exc:
        raise TensorRTMissing(f"TensorRT is not installed here ({exc}); engines must be built on the target "
                              "device (JetPack ships TensorRT)") from None
    return tensorrt


@dataclass(frozen=True)
class BuildOptions:
    """Engine build settings.

    Attributes:
        precision: ``int8`` (a Q/DQ ONNX, strongly typed), ``fp16`` (10.x FP16 flag), ``fp32``.
        workspace_mib: workspace memory pool limit in MiB (default 1024).
        opt_batch / max_batch: optimization profile batch sizes for a dynamic batch axis
            (min is always 1; ``max_batch`` None = 8).
        timing_cache: timing cache file, read if present and written back after the build.
        dla_core: run on this DLA core (Jetson Orin: 0 or 1) with GPU fallback; None = GPU.
        builder_optimization_level: 0-5 (TensorRT default 3); None = default.
        verbose: log TensorRT INFO messages too.
    """

    precision: Precision = "int8"
    workspace_mib: int = 1024
    opt_batch: int = 1
    max_batch: int | None = None
    timing_cache: Path | None = None
    dla_core: int | None = None
    builder_optimization_level: int | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}, expected one of {list(PRECISIONS)}")
        if self.workspace_mib < 1:
            raise ValueError(f"workspace_mib = {self.workspace_mib}, expected >= 1")
        if self.dla_core is not None and self.dla_core < 0:
            raise ValueError(f"dla_core = {self.dla_core}, expected >= 0 or None")
        if self.builder_optimization_level is not None and not 0 <= self.builder_optimization_level <= 5:
            raise ValueError(f"builder_optimization_level = {self.builder_optimization_level}, expected 0..5")

    @property
    def strongly_typed(self) -> bool:
        return self.precision != "fp16"

    def to_dict(self) -> dict[str, object]:
        return {"precision": self.precision, "workspace_mib": self.workspace_mib, "opt_batch": self.opt_batch,
                "max_batch": self.max_batch, "timing_cache": str(self.timing_cache) if self.timing_cache else None,
                "dla_core": self.dla_core, "builder_optimization_level": self.builder_optimization_level,
                "strongly_typed": self.strongly_typed}


@dataclass(frozen=True)
class TensorDesc:
    """A network I/O tensor: ``name``, ``shape`` (-1 = dynamic) and numpy ``dtype`` name."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class BuiltPlan:
    """A serialized engine and what the sidecar needs to know about it."""

    plan: bytes
    trt_version: str
    inputs: tuple[TensorDesc, ...]
    outputs: tuple[TensorDesc, ...]
    profile: tuple[ProfileShape, ...]
    options: BuildOptions
    seconds: float
    log: tuple[str, ...] = field(default=())


_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
           "BOOL": "bool", "UINT8": "uint8", "BF16": "bfloat16", "FP8": "float8"}


def dtype_name(dt: trt.DataType) -> str:
    """TensorRT ``DataType`` -> numpy-style name (``DataType.FLOAT`` -> ``"float32"``)."""
    return _DTYPES.get(dt.name, dt.name.lower())


class LogCollector:
    """Collects TensorRT log lines (errors and warnings; INFO when verbose) for messages.

    :meth:`logger` returns a ``tensorrt.ILogger`` that appends to :attr:`lines` and prints
    warnings and errors to stderr."""

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self.lines: list[str] = []
        self.errors: list[str] = []

    def logger(self) -> trt.ILogger:
        import sys

        import tensorrt as trt

        collector = self

        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
                name = severity.name
                if name in ("INTERNAL_ERROR", "ERROR"):
                    collector.errors.append(msg)
                elif name == "WARNING":
                    pass
                elif not collector.verbose:
                    return
                collector.lines.append(f"[TensorRT {name}] {msg}")
                if name != "VERBOSE":
                    print(f"[TensorRT {name}] {msg}", file=sys.stderr)

        return _Logger()


def create_network(builder: trt.Builder, strongly_typed: bool) -> trt.INetworkDefinition:
    """Step 1: an explicit-batch network, strongly typed when asked (works on 10.x and 11.x)."""
    import tensorrt as trt

    flags = 0
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return builder.create_network(flags)


def parse_onnx(network: trt.INetworkDefinition, logger: trt.ILogger, onnx_path: str | Path) -> trt.OnnxParser:
    """Step 2: parse ``onnx_path`` into ``network``.

    Raises:
        OnnxParseError: listing every parser error (node name, operator, error code, description).
    """
    import tensorrt as trt

    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return parser
    errors: list[str] = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        where = e.node_name() or (f"node #{e.node()}" if e.node() >= 0 else "graph")
        op = f" ({e.node_operator()})" if e.node_operator() else ""
        errors.append(f"{where}{op}: {e.code().name}: {e.desc()}")
    if not errors:
        errors.append("parser returned failure without an error record")
    raise OnnxParseError(f"TensorRT's ONNX parser rejected {onnx_path} ({len(errors)} error(s)):\n  "
                         + "\n  ".join(errors))


def configure(
    builder: trt.Builder,
    network: trt.INetworkDefinition,
    options: BuildOptions,
    profile: list[ProfileShape],
) -> tuple[trt.IBuilderConfig, trt.ITimingCache | None]:
    """Step 3: builder config (workspace, profile, timing cache, DLA, FP16 flag on 10.x).

    Raises:
        EngineBuildError: FP16 asked on a TensorRT without ``BuilderFlag.FP16`` (11.x), a DLA core
            on a device without one, or a timing cache TensorRT cannot read.
    """
    import tensorrt as trt

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if options.builder_optimization_level is not None:
        config.builder_optimization_level = options.builder_optimization_level
    if options.precision == "fp16":
        fp16 = getattr(trt.BuilderFlag, "FP16", None)  # removed in TensorRT 11
        if fp16 is None:
            raise EngineBuildError(
                f"TensorRT {trt.__version__} has no BuilderFlag.FP16 (TensorRT 11 builds strongly typed networks "
                "only): convert the ONNX model to FP16 first and build it with --precision fp32")
        config.set_flag(fp16)
    if profile:
        p = builder.create_optimization_profile()
        for s in profile:
            p.set_shape(s.name, s.min, s.opt, s.max)
        config.add_optimization_profile(p)
    if options.dla_core is not None:
        if builder.num_DLA_cores <= options.dla_core:
            raise EngineBuildError(f"DLA core {options.dla_core} requested, this device has "
                                   f"{builder.num_DLA_cores} DLA core(s)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cache: trt.ITimingCache | None = None
    if options.timing_cache is not None:
        blob = options.timing_cache.read_bytes() if options.timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        if not config.set_timing_cache(cache, False):
            raise EngineBuildError(f"timing cache {options.timing_cache} does not match this TensorRT/GPU; "
                                   "delete it to start a new one")
    return config, cache


def serialize(builder: trt.Builder, network: trt.INetworkDefinition, config: trt.IBuilderConfig,
              errors: list[str]) -> bytes:
    """Step 4: ``build_serialized_network``.

    Raises:
        EngineBuildError: TensorRT returned no plan (with the errors it logged).
    """
    host = builder.build_serialized_network(network, config)
    if host is None:
        detail = "\n  ".join(errors[-20:]) if errors else "(TensorRT logged no error)"
        raise EngineBuildError(f"TensorRT could not build the engine:\n  {detail}")
    return bytes(memoryview(host))


def _dims(d: trt.Dims) -> tuple[int, ...]:
    return tuple(int(d[i]) for i in range(len(d)))


def network_io(network: trt.INetworkDefinition) -> tuple[tuple[TensorDesc, ...], tuple[TensorDesc, ...]]:
    """Names, shapes (-1 = dynamic) and dtypes of the parsed network's inputs and outputs."""
    ins = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        ins.append(TensorDesc(t.name, _dims(t.shape), dtype_name(t.dtype)))
    outs = []
    for i in range(network.num_outputs):
        t = network.get_output(i)
        outs.append(TensorDesc(t.name, _dims(t.shape), dtype_name(t.dtype)))
    return tuple(ins), tuple(outs)



def build_plan(onnx_path: str | Path, options: BuildOptions, *, input_hw: tuple[int, int] | None = None) -> BuiltPlan:
    """Build a serialized TensorRT plan from ``onnx_path`` (steps 1-4), update the timing cache.

    Args:
        onnx_path: the model (Q/DQ for ``int8``).
        options: see :class:`BuildOptions`.
        input_hw: ``(H, W)`` for models with dynamic height/width (the spec's ``input_size``).

    Raises:
        TensorRTMissing: no TensorRT here.
        trt_build.profile.ProfileError: no valid optimization profile.
        OnnxParseError / EngineBuildError: see the steps.
    """
    trt_mod = import_tensorrt()
    t0 = time.perf_counter()
    profile = choose_profile(onnx_input_shapes(str(onnx_path)), opt_batch=options.opt_batch,
                             max_batch=options.max_batch, input_hw=input_hw)
    logs = LogCollector(options.verbose)
    logger = logs.logger()
    builder = trt_mod.Builder(logger)
    network = create_network(builder, options.strongly_typed)
    parse_onnx(network, logger, onnx_path)
    config, cache = configure(builder, network, options, profile)
    plan = serialize(builder, network, config, logs.errors)
    if cache is not None and options.timing_cache is not None:
        write_bytes_atomic(options.timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    inputs, outputs = network_io(network)
    return BuiltPlan(plan, str(trt_mod.__version__), inputs, outputs, tuple(profile), options,
                     time.perf_counter() - t0, tuple(logs.lines))
