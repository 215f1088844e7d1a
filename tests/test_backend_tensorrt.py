"""TensorRT backend with TensorRT and CUDA replaced by fakes (the only mocks allowed in edgeqc).

The fake "plan" is JSON describing the engine's I/O tensors; the fake execution context runs the
tiny classifier of tiny_models on the bytes in fake device memory, so the whole path (page-locked
copy, H2D, execute_async_v3 with tensors bound by name, D2H, softmax) is exercised. A real-GPU
test at the end runs only where tensorrt and pycuda import (``-m gpu`` on the device).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
from tiny_models import expected_logits, make_classifier

from edge.backends import BackendError, BackendInputError, softmax
from edge.backends.engine_sidecar import (
    EngineCompatError,
    check_engine_compat,
    require_engine_compat,
    sidecar_path,
)
from edge.backends.tensorrt import TensorRTBackend, check_engine_file
from edge.model_spec import ModelSpec, spec_to_dict
from edge.settings import ModelSettings

FIVE = ("a", "b", "c", "d", "e")
TRT_VERSION = "10.3.0.30"
CC = (8, 7)


# ----------------------------------------------------------------------------------- fakes ----


class FakeMem:
    def __init__(self, cuda: FakeCuda, addr: int, nbytes: int) -> None:
        self.cuda, self.addr, self.nbytes, self.freed = cuda, addr, nbytes, False

    def __int__(self) -> int:
        return self.addr

    def free(self) -> None:
        self.cuda.require_context("free")
        self.freed = True


class FakeContext:
    def __init__(self, cuda: FakeCuda) -> None:
        self.cuda, self.detached = cuda, False

    def push(self) -> None:
        self.cuda.stack().append(self)
        self.cuda.log.append((threading.get_ident(), "push"))

    def pop(self) -> None:
        assert self.cuda.stack() and self.cuda.stack()[-1] is self, "pop of a context not current in this thread"
        self.cuda.stack().pop()
        self.cuda.log.append((threading.get_ident(), "pop"))

    def detach(self) -> None:
        self.detached = True


class FakeStream:
    handle = 0xBEEF

    def synchronize(self) -> None:
        pass


class FakeEvent:
    clock = 0.0

    def record(self, stream: FakeStream) -> None:
        FakeEvent.clock += 0.25
        self.t = FakeEvent.clock

    def time_since(self, start: FakeEvent) -> float:
        return self.t - start.t


class FakeCuda:
    """CudaApi fake: device memory is a dict of byte arrays; calls need a current context in the
    calling thread, like pycuda ("invalid device context")."""

    def __init__(self, cc: tuple[int, int] = CC) -> None:
        self.cc = cc
        self.memory: dict[int, np.ndarray] = {}
        self.allocs: list[FakeMem] = []
        self.contexts: list[FakeContext] = []
        self.log: list[tuple[int, str]] = []
        self._local = threading.local()
        self._next = 0x1000

    def stack(self) -> list[FakeContext]:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def require_context(self, what: str) -> None:
        if not self.stack():
            raise RuntimeError(f"{what}: invalid device context (none current in this thread)")

    def init(self) -> None:
        pass

    def device_name(self, device: int) -> str:
        return "FakeGPU"

    def compute_capability(self, device: int) -> tuple[int, int]:
        return self.cc

    def make_context(self, device: int) -> FakeContext:
        ctx = FakeContext(self)
        self.contexts.append(ctx)
        ctx.push()
        return ctx

    def pagelocked_empty(self, shape, dtype) -> np.ndarray:
        self.require_context("pagelocked_empty")
        return np.empty(shape, dtype)

    def mem_alloc(self, nbytes: int) -> FakeMem:
        self.require_context("mem_alloc")
        mem = FakeMem(self, self._next, nbytes)
        self.memory[self._next] = np.zeros(nbytes, np.uint8)
        self._next += 0x1000 + nbytes
        self.allocs.append(mem)
        return mem

    def stream(self) -> FakeStream:
        self.require_context("stream")
        return FakeStream()

    def event(self) -> FakeEvent:
        return FakeEvent()

    def memcpy_htod_async(self, dst: FakeMem, src: np.ndarray, stream: FakeStream) -> None:
        self.require_context("memcpy_htod_async")
        assert src.flags.c_contiguous and src.nbytes <= dst.nbytes
        self.memory[int(dst)][: src.nbytes] = src.reshape(-1).view(np.uint8)

    def memcpy_dtoh_async(self, dst: np.ndarray, src: FakeMem, stream: FakeStream) -> None:
        self.require_context("memcpy_dtoh_async")
        assert dst.flags.c_contiguous and dst.nbytes <= src.nbytes
        dst.reshape(-1).view(np.uint8)[:] = self.memory[int(src)][: dst.nbytes]


class IOMode:
    INPUT = "INPUT"
    OUTPUT = "OUTPUT"


class DataType:
    FLOAT = "FLOAT"
    HALF = "HALF"
    INT8 = "INT8"
    INT32 = "INT32"


class FakeExecutionContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.shape_calls: list[tuple[str, tuple[int, ...]]] = []
        self.executions: list[int] = []

    def set_input_shape(self, name: str, shape) -> bool:
        self.shape_calls.append((name, tuple(shape)))
        lo, _, hi = self.engine.profile
        if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, address: int) -> bool:
        assert name in self.engine.tensors, name
        self.addresses[name] = address
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        shape = self.engine.tensors[name]["shape"]
        n = self.shapes.get(self.engine.input_name, (shape[0],))[0]
        return (n, *shape[1:])

    def execute_async_v3(self, stream_handle: int) -> bool:
        cuda = self.engine.cuda
        cuda.require_context("execute_async_v3")
        assert stream_handle == FakeStream.handle
        assert set(self.addresses) == set(self.engine.tensors), "every I/O tensor needs an address"
        shape = self.get_tensor_shape(self.engine.input_name)
        n = int(np.prod(shape))
        x = cuda.memory[self.addresses[self.engine.input_name]][: n * 4].view(np.float32).reshape(shape)
        out = expected_logits(x, self.engine.classes).astype(np.float32)
        if self.engine.softmax:
            out = softmax(out)
        buf = cuda.memory[self.addresses[self.engine.output_name]]
        buf[: out.nbytes] = out.reshape(-1).view(np.uint8)
        self.executions.append(shape[0])
        return True


class FakeEngine:
    def __init__(self, desc: dict, cuda: FakeCuda) -> None:
        self.cuda = cuda
        self.tensors: dict[str, dict] = {t["name"]: t for t in desc["tensors"]}
        self.order = [t["name"] for t in desc["tensors"]]
        self.input_name = next(t["name"] for t in desc["tensors"] if t["mode"] == "INPUT")
        self.output_name = desc["output"]
        self.classes = desc["classes"]
        self.softmax = desc.get("softmax", False)
        self.profile = [tuple(p) for p in desc["profile"]]
        self.contexts: list[FakeExecutionContext] = []

    @property
    def num_io_tensors(self) -> int:
        return len(self.order)

    def get_tensor_name(self, index: int) -> str:
        return self.order[index]

    def get_tensor_mode(self, name: str) -> str:
        return getattr(IOMode, self.tensors[name]["mode"])

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.tensors[name]["shape"])

    def get_tensor_dtype(self, name: str) -> str:
        return DataType.FLOAT

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        assert name == self.input_name and profile_index == 0
        return self.profile

    def create_execution_context(self) -> FakeExecutionContext:
        ctx = FakeExecutionContext(self)
        self.contexts.append(ctx)
        return ctx


def fake_tensorrt(cuda: FakeCuda, version: str = TRT_VERSION) -> types.ModuleType:
    mod = types.ModuleType("tensorrt")
    mod.__version__ = version
    mod.deserialized = []  # type: ignore[attr-defined]

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity: str) -> None:
            self.severity = severity

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, plan: bytes) -> FakeEngine:
            cuda.require_context("deserialize_cuda_engine")
            engine = FakeEngine(json.loads(plan), cuda)
            mod.deserialized.append(engine)  # type: ignore[attr-defined]
            return engine

    mod.Logger, mod.Runtime, mod.TensorIOMode, mod.DataType = Logger, Runtime, IOMode, DataType  # type: ignore[attr-defined]
    return mod


@pytest.fixture
def cuda() -> FakeCuda:
    return FakeCuda()


@pytest.fixture
def trt(monkeypatch, cuda) -> types.ModuleType:
    mod = fake_tensorrt(cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    return mod


def make_engine(tmp_path: Path, *, batch: int = -1, profile_max: int = 8, softmax_out: bool = False,
                sidecar_overrides: dict | None = None, write_sidecar: bool = True) -> Path:
    """A fake plan (JSON) with tensors in the order output, extra output, input; and its sidecar."""
    desc = {
        "tensors": [{"name": "logits", "mode": "OUTPUT", "shape": [batch, 5]},
                    {"name": "features", "mode": "OUTPUT", "shape": [batch, 3]},
                    {"name": "input", "mode": "INPUT", "shape": [batch, 3, 8, 8]}],
        "output": "logits", "classes": 5, "softmax": softmax_out,
        "profile": [[1, 3, 8, 8], [4, 3, 8, 8], [profile_max, 3, 8, 8]] if batch == -1 else [[batch, 3, 8, 8]] * 3,
    }
    engine = tmp_path / "model.engine"
    engine.write_bytes(json.dumps(desc).encode())
    spec = ModelSpec(labels=FIVE, input_name="input", output_name="logits", input_size=(8, 8),
                     output="probabilities" if softmax_out else "logits", dynamic_batch=batch == -1,
                     max_batch=profile_max if batch == -1 else batch)
    sidecar = {"trt_version": TRT_VERSION, "device_name": "Orin", "compute_capability": list(CC),
               "precision": "int8", "model_spec": spec_to_dict(spec),
               "inputs": [{"name": "input", "shape": [batch, 3, 8, 8], "dtype": "float32"}],
               "outputs": [{"name": "logits", "shape": [batch, 5], "dtype": "float32"}],
               "plan_sha256": hashlib.sha256(engine.read_bytes()).hexdigest(), "onnx_sha256": "0" * 64,
               "calib_sha256": None, "build": {"time": "2026-01-01T00:00:00Z"}}
    sidecar.update(sidecar_overrides or {})
    if write_sidecar:
        sidecar_path(engine).write_text(json.dumps(sidecar))
    return engine


def x_batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 8, 8)).astype(np.float32)


# ------------------------------------------------------------------------ compatibility -------

SIDECAR = {"trt_version": TRT_VERSION, "compute_capability": [8, 7], "device_name": "Orin",
           "plan_sha256": "ab" * 32, "model_spec": {}, "inputs": [], "outputs": []}


def test_compat_ok():
    assert check_engine_compat(SIDECAR, plan_sha256="AB" * 32, trt_version=TRT_VERSION, compute_capability=(8, 7)) == []


def test_compat_trt_version_mismatch():
    msgs = check_engine_compat(SIDECAR, plan_sha256="ab" * 32, trt_version="10.7.0.23", compute_capability=(8, 7))
    assert msgs == ["TensorRT version mismatch: engine built with TensorRT 10.3.0.30, this device runs TensorRT 10.7.0.23"]


def test_compat_compute_capability_mismatch():
    msgs = check_engine_compat(SIDECAR, plan_sha256="ab" * 32, trt_version=TRT_VERSION, compute_capability=(8, 6),
                               device_name="NVIDIA A10")
    assert msgs == ["GPU compute capability mismatch: engine built for 8.7 (Orin), this device is 8.6 (NVIDIA A10)"]


def test_compat_plan_hash_mismatch_and_all_reported():
    msgs = check_engine_compat(SIDECAR, plan_sha256="cd" * 32, trt_version="11.4.0.106", compute_capability=(9, 0))
    assert len(msgs) == 3
    assert msgs[2].startswith("plan sha256 mismatch: sidecar records abababababababab…, the plan file hashes to "
                              "cdcdcdcdcdcdcdcd…")
    with pytest.raises(EngineCompatError) as err:
        require_engine_compat("m.engine", SIDECAR, plan_sha256="cd" * 32, trt_version="11.4.0.106",
                              compute_capability=(9, 0))
    text = str(err.value)
    assert "TensorRT 10.3.0.30" in text and "9.0" in text and "rebuilt on this device" in text


def test_compat_missing_keys_and_unknown_device_facts():
    msgs = check_engine_compat({"trt_version": "10.3.0.30"}, plan_sha256="ab", trt_version=None, compute_capability=None)
    assert msgs == ["sidecar lacks key(s) ['compute_capability', 'plan_sha256', 'model_spec', 'inputs', 'outputs']"]


def test_missing_sidecar(tmp_path, trt, cuda):
    engine = make_engine(tmp_path, write_sidecar=False)
    with pytest.raises(EngineCompatError, match=r"sidecar .*model\.engine\.json is missing.*rebuilt on this device"):
        TensorRTBackend(ModelSettings(path=str(engine)), cuda=cuda)
    assert trt.deserialized == []


def test_version_mismatch_stops_before_deserializing(tmp_path, trt, cuda):
    engine = make_engine(tmp_path, sidecar_overrides={"trt_version": "10.3.1.2"})
    with pytest.raises(EngineCompatError, match="engine built with TensorRT 10.3.1.2, this device runs TensorRT 10.3.0.30"):
        TensorRTBackend(ModelSettings(path=str(engine)), cuda=cuda)
    assert trt.deserialized == [] and cuda.contexts == []


def test_compute_capability_and_hash_mismatch(tmp_path, trt):
    engine = make_engine(tmp_path)
    engine.write_bytes(engine.read_bytes() + b" ")  # plan changed after the sidecar was written
    with pytest.raises(EngineCompatError) as err:
        TensorRTBackend(ModelSettings(path=str(engine)), cuda=FakeCuda(cc=(8, 6)))
    assert "engine built for 8.7 (Orin), this device is 8.6 (FakeGPU)" in str(err.value)
    assert "plan sha256 mismatch" in str(err.value)


def test_check_engine_file_preflight(tmp_path, trt, cuda):
    engine = make_engine(tmp_path)
    assert check_engine_file(engine, cuda=cuda) == []
    assert check_engine_file(engine, cuda=FakeCuda(cc=(7, 2)))[0].startswith("GPU compute capability mismatch")


# ---------------------------------------------------------------------------- inference -------


def test_tensors_bound_by_name(tmp_path, trt, cuda):
    engine = make_engine(tmp_path)
    with TensorRTBackend(ModelSettings(path=str(engine), max_batch=4), cuda=cuda) as b:
        ctx = trt.deserialized[0].contexts[0]
        by_addr = {m.addr: m for m in cuda.allocs}
        assert set(ctx.addresses) == {"input", "logits", "features"}
        assert len(set(ctx.addresses.values())) == 3
        assert by_addr[ctx.addresses["input"]].nbytes == 4 * 3 * 8 * 8 * 4  # max_batch 4, float32
        assert by_addr[ctx.addresses["logits"]].nbytes == 4 * 5 * 4
        assert (b.name, b.precision, b.max_batch) == ("tensorrt", "int8", 4)
        assert b.model_hash == hashlib.sha256(engine.read_bytes()).hexdigest()
        assert b.spec.labels == FIVE and b.spec.output == "logits"


def test_dynamic_batch_shapes_and_softmax(tmp_path, trt, cuda):
    engine = make_engine(tmp_path, profile_max=8)
    with TensorRTBackend(ModelSettings(path=str(engine), max_batch=4), cuda=cuda) as b:
        ctx = trt.deserialized[0].contexts[0]
        assert ctx.shape_calls == [("input", (4, 3, 8, 8))]  # bound for max_batch at activation
        x = x_batch(3)
        probs = b.infer(x)
        assert probs.dtype == np.float32 and probs.shape == (3, 5) and probs.flags.c_contiguous
        np.testing.assert_allclose(probs, softmax(expected_logits(x, 5)), atol=1e-6)
        b.infer(x_batch(3, seed=1))  # same N: no new set_input_shape
        assert ctx.shape_calls[-1] == ("input", (3, 3, 8, 8)) and len(ctx.shape_calls) == 2
        x6 = x_batch(6, seed=2)
        np.testing.assert_allclose(b.infer(x6), softmax(expected_logits(x6, 5)), atol=1e-6)
        assert ctx.shape_calls[2:] == [("input", (4, 3, 8, 8)), ("input", (2, 3, 8, 8))]
        assert ctx.executions == [3, 3, 4, 2]
        assert b.last_gpu_ms == pytest.approx(0.25)
        assert b.infer(x[:0]).shape == (0, 5)


def test_profile_max_limits_max_batch(tmp_path, trt, cuda):
    with TensorRTBackend(ModelSettings(path=str(make_engine(tmp_path, profile_max=2)), max_batch=8), cuda=cuda) as b:
        assert b.max_batch == 2
        x = x_batch(5)
        np.testing.assert_allclose(b.infer(x), softmax(expected_logits(x, 5)), atol=1e-6)
        assert trt.deserialized[0].contexts[0].executions == [2, 2, 1]


def test_fixed_batch_engine_pads(tmp_path, trt, cuda):
    with TensorRTBackend(ModelSettings(path=str(make_engine(tmp_path, batch=2)), max_batch=8), cuda=cuda) as b:
        ctx = trt.deserialized[0].contexts[0]
        x = x_batch(3)
        np.testing.assert_allclose(b.infer(x), softmax(expected_logits(x, 5)), atol=1e-6)
        assert b.max_batch == 2 and ctx.shape_calls == [] and ctx.executions == [2, 2]


def test_probabilities_engine_not_softmaxed_twice(tmp_path, trt, cuda):
    with TensorRTBackend(ModelSettings(path=str(make_engine(tmp_path, softmax_out=True))), cuda=cuda) as b:
        assert b.spec.output == "probabilities"
        x = x_batch(2)
        np.testing.assert_allclose(b.infer(x), softmax(expected_logits(x, 5)), atol=1e-6)


def test_inference_from_another_thread_pushes_the_context(tmp_path, trt, cuda):
    b = TensorRTBackend(ModelSettings(path=str(make_engine(tmp_path))), cuda=cuda)
    assert cuda.stack() == []  # popped after activation
    result: dict[str, object] = {}

    def worker() -> None:
        result["probs"] = b.infer(x_batch(2))
        result["tid"] = threading.get_ident()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert np.asarray(result["probs"]).shape == (2, 5)
    assert [e for tid, e in cuda.log if tid == result["tid"]] == ["push", "pop"]
    b.close()


def test_close_frees_everything(tmp_path, trt, cuda):
    b = TensorRTBackend(ModelSettings(path=str(make_engine(tmp_path))), cuda=cuda)
    b.close()
    assert all(m.freed for m in cuda.allocs) and len(cuda.allocs) == 3
    assert cuda.contexts[0].detached and cuda.stack() == []
    b.close()
    with pytest.raises(BackendError, match="closed"):
        b.infer(x_batch(1))


def test_input_checked_against_engine_spec(tmp_path, trt, cuda):
    with (TensorRTBackend(ModelSettings(path=str(make_engine(tmp_path))), cuda=cuda) as b,
          pytest.raises(BackendInputError, match=r"shape \[1, 3, 16, 16\], expected \[N,3,8,8\]")):
        b.infer(np.zeros((1, 3, 16, 16), np.float32))


def test_spec_not_matching_engine_io(tmp_path, trt, cuda):
    engine = make_engine(tmp_path)
    bad = ModelSpec(labels=FIVE, input_name="images", output_name="logits", input_size=(8, 8))
    with pytest.raises(BackendError, match=r"inputs \['input'\].*input 'images'"):
        TensorRTBackend(ModelSettings(path=str(engine)), bad, cuda=cuda)
    assert all(m.freed for m in cuda.allocs) and cuda.contexts[0].detached


def test_module_imports_without_tensorrt_and_says_what_is_missing(tmp_path, monkeypatch):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    engine = make_engine(tmp_path)
    with pytest.raises(BackendError, match="needs the tensorrt Python package"):
        TensorRTBackend(ModelSettings(path=str(engine)))


# ------------------------------------------------------------------------------ real GPU ------


def _have_gpu_stack() -> bool:
    return importlib.util.find_spec("tensorrt") is not None and importlib.util.find_spec("pycuda") is not None


@pytest.mark.gpu
@pytest.mark.skipif(not _have_gpu_stack(), reason="needs tensorrt and pycuda (device only)")
def test_real_engine_matches_onnxruntime(tmp_path):  # pragma: no cover - runs on the device
    import tensorrt as real_trt

    from edge.backends._cuda import PyCuda
    from edge.backends.onnxruntime import OnnxRuntimeBackend

    onnx_path = make_classifier(tmp_path / "tiny.onnx", classes=5)
    logger = real_trt.Logger(real_trt.Logger.WARNING)
    builder = real_trt.Builder(logger)
    network = builder.create_network(1 << int(real_trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = real_trt.OnnxParser(network, logger)
    assert parser.parse(onnx_path.read_bytes())
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None
    engine = tmp_path / "tiny.engine"
    engine.write_bytes(bytes(plan))
    cuda = PyCuda()
    cuda.init()
    spec = ModelSpec(labels=FIVE, input_name="input", output_name="logits", input_size=(8, 8), max_batch=8)
    sidecar_path(engine).write_text(json.dumps({
        "trt_version": real_trt.__version__, "device_name": cuda.device_name(0),
        "compute_capability": list(cuda.compute_capability(0)), "precision": "fp32",
        "inputs": [{"name": "input", "shape": [-1, 3, 8, 8], "dtype": "float32"}],
        "outputs": [{"name": "logits", "shape": [-1, 5], "dtype": "float32"}],
        "model_spec": spec_to_dict(spec), "plan_sha256": hashlib.sha256(engine.read_bytes()).hexdigest(),
        "onnx_sha256": None, "calib_sha256": None, "build": {}}))
    x = x_batch(6)
    with OnnxRuntimeBackend(ModelSettings(path=str(onnx_path), labels=list(FIVE))) as ref:
        want = ref.infer(x)
    result: dict[str, np.ndarray] = {}
    with TensorRTBackend(ModelSettings(path=str(engine), max_batch=4)) as b:
        t = threading.Thread(target=lambda: result.update(p=b.infer(x)))  # another thread than the opener
        t.start()
        t.join()
        assert b.last_gpu_ms is not None and b.last_gpu_ms >= 0
    np.testing.assert_allclose(result["p"], want, atol=1e-4)
