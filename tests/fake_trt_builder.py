"""A fake ``tensorrt`` module for the *builder* side (TensorRT cannot be installed on CI machines:
facts.md §1). Only mocks TensorRT: everything around it (ONNX reading, profile choice, sidecar,
atomic write, the runtime's compatibility check) runs for real.

The fake parser reads the real ONNX file with ``onnx`` and declares its inputs/outputs on the
network (dynamic dims -> -1); a node whose op type is in ``UNSUPPORTED`` becomes a parser error.
The "plan" is JSON describing what the builder was asked to do, so tests can assert on it.
``make_fake_tensorrt("11.4.0.106")`` drops the flags TensorRT 11 removed (FP16, INT8).
"""

from __future__ import annotations

import json
import types
from typing import Any

UNSUPPORTED = {"BogusOp", "AnotherBogusOp"}
_DT = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 7: "INT64"}


class _Enum:
    def __init__(self, name: str, value: int) -> None:
        self.name, self.value = name, value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return self.name


def make_fake_tensorrt(version: str = "10.3.0.30", *, dla_cores: int = 0, fail_build: bool = False) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]
    v11 = version.startswith("11.")
    state: dict[str, Any] = {"timing_cache_in": [], "builds": 0}
    trt.state = state  # type: ignore[attr-defined]

    class Severity(_Enum):
        pass

    class ILogger:
        Severity = types.SimpleNamespace(**{n: Severity(n, i) for i, n in enumerate(
            ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])})

        def __init__(self) -> None:
            pass

        def log(self, severity: Any, msg: str) -> None:  # overridden
            pass

    trt.ILogger = ILogger  # type: ignore[attr-defined]
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(  # type: ignore[attr-defined]
        STRONGLY_TYPED=_Enum("STRONGLY_TYPED", 1), **({} if v11 else {"EXPLICIT_BATCH": _Enum("EXPLICIT_BATCH", 0)}))
    flags = {"GPU_FALLBACK": 1, "TF32": 2}
    if not v11:
        flags.update({"FP16": 3, "INT8": 4})
    trt.BuilderFlag = types.SimpleNamespace(**{k: _Enum(k, v) for k, v in flags.items()})  # type: ignore[attr-defined]
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=_Enum("WORKSPACE", 0))  # type: ignore[attr-defined]
    trt.DeviceType = types.SimpleNamespace(GPU=_Enum("GPU", 0), DLA=_Enum("DLA", 1))  # type: ignore[attr-defined]
    trt.DataType = types.SimpleNamespace(**{n: _Enum(n, i) for i, n in enumerate(_DT.values())})  # type: ignore

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...], dtype: str) -> None:
            self.name, self.shape, self.dtype = name, shape, getattr(trt.DataType, dtype)

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[Tensor] = []
            self.outputs: list[Tensor] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        @property
        def num_outputs(self) -> int:
            return len(self.outputs)

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

        def get_output(self, i: int) -> Tensor:
            return self.outputs[i]

    class ParserError:
        def __init__(self, node: int, name: str, op: str) -> None:
            self._node, self._name, self._op = node, name, op

        def code(self) -> _Enum:
            return _Enum("UNSUPPORTED_NODE", 8)

        def desc(self) -> str:
            return f"No importer registered for op: {self._op}"

        def node(self) -> int:
            return self._node

        def node_name(self) -> str:
            return self._name

        def node_operator(self) -> str:
            return self._op

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            self.network, self.errors = network, []

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> ParserError:
            return self.errors[i]

        def parse_from_file(self, path: str) -> bool:
            import onnx

            m = onnx.load(path)
            self.errors = [ParserError(i, n.name, n.op_type) for i, n in enumerate(m.graph.node)
                           if n.op_type in UNSUPPORTED]
            init = {t.name for t in m.graph.initializer}

            def dims(vi: Any) -> tuple[int, ...]:
                return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)

            for vi in m.graph.input:
                if vi.name not in init:
                    self.network.inputs.append(Tensor(vi.name, dims(vi), _DT[vi.type.tensor_type.elem_type]))
            for vi in m.graph.output:
                self.network.outputs.append(Tensor(vi.name, dims(vi), _DT[vi.type.tensor_type.elem_type]))
            return not self.errors

    trt.OnnxParser = OnnxParser  # type: ignore[attr-defined]

    class TimingCache:
        def __init__(self, blob: bytes) -> None:
            self.blob = bytes(blob)

        def serialize(self) -> bytes:
            return b"TCACHE" + str(state["builds"]).encode()

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, list[list[int]]] = {}

        def set_shape(self, name: str, mn: Any, opt: Any, mx: Any) -> None:
            self.shapes[name] = [list(mn), list(opt), list(mx)]

    class Config:
        def __init__(self) -> None:
            self.flags: list[str] = []
            self.pools: dict[str, int] = {}
            self.profiles: list[Profile] = []
            self.default_device_type = trt.DeviceType.GPU
            self.DLA_core = -1
            self.builder_optimization_level = 3
            self.cache: TimingCache | None = None

        def set_memory_pool_limit(self, pool: _Enum, size: int) -> None:
            self.pools[pool.name] = size

        def set_flag(self, flag: _Enum) -> None:
            self.flags.append(flag.name)

        def add_optimization_profile(self, p: Profile) -> int:
            self.profiles.append(p)
            return len(self.profiles) - 1

        def create_timing_cache(self, blob: bytes) -> TimingCache:
            state["timing_cache_in"].append(bytes(blob))
            return TimingCache(blob)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.cache = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            assert self.cache is not None
            return self.cache

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = logger
            self.num_DLA_cores = dla_cores

        def create_network(self, flags: int = 0) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            state["builds"] += 1
            if fail_build:
                self.logger.log(ILogger.Severity.ERROR, "fake: out of workspace")
                return None
            return json.dumps({
                "network_flags": network.flags, "flags": config.flags, "pools": config.pools,
                "profiles": [p.shapes for p in config.profiles], "dla_core": config.DLA_core,
                "device": config.default_device_type.name, "opt_level": config.builder_optimization_level,
            }).encode()

    trt.Builder = Builder  # type: ignore[attr-defined]
    return trt
