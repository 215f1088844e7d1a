"""TensorRT backend (TensorRT 10.x / 11.x, pycuda), for ``.engine``/``.plan`` files.

Life cycle:

1. **Compatibility check** before anything is deserialized (pure Python,
   :mod:`edge.backends.engine_sidecar`): the sidecar ``<engine>.json`` must exist and match the
   running TensorRT version, the GPU's compute capability and the plan's sha256; otherwise
   :class:`~edge.backends.engine_sidecar.EngineCompatError` says what differs and that the
   engine must be rebuilt on this device.
2. **Activation** (in the constructor): a CUDA context is created, the plan deserialized, one
   execution context, page-locked host buffers and device buffers for ``max_batch`` allocated,
   every I/O tensor bound by name (``set_tensor_address``), then the context is popped.
3. **infer**: the context is pushed in the *calling* thread and popped afterwards (pycuda raises
   "invalid device context" otherwise), so any single thread may run inference. Per chunk:
   copy into page-locked input, ``set_input_shape`` (dynamic batch, when N changes), async H2D,
   ``execute_async_v3`` on one stream between two events (``last_gpu_ms``), async D2H,
   synchronize, softmax for logits.
4. **close**: buffers freed and the context detached, with the context pushed.

Only the named-tensor API is used (``num_io_tensors``, ``get_tensor_name``,
``get_tensor_mode``, ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``); no
bindings API, no implicit batch. ``tensorrt`` and ``pycuda`` are imported lazily, so this module
imports without them. Type-checked against the 10.3 and 11.4 stubs (``tools/typecheck.sh``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.backends import BackendError, as_probabilities, check_batch
from edge.backends._cuda import Context, CudaApi, DeviceMemory, Event, Stream
from edge.backends.engine_sidecar import check_engine_compat, read_sidecar, require_engine_compat
from edge.model_spec import ModelSpec, resolve_spec

if TYPE_CHECKING:
    import tensorrt as trt
    from typing_extensions import Self

    from edge.settings import ModelSettings

log = logging.getLogger(__name__)


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendError(f"the TensorRT backend needs the tensorrt Python package (JetPack ships it): {exc}") from exc
    return tensorrt


def _dims(d: trt.Dims) -> tuple[int, ...]:
    return tuple(int(d[i]) for i in range(len(d)))


def _np_dtype(dt: trt.DataType) -> np.dtype[Any]:
    import tensorrt as trt

    table = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16,
             trt.DataType.INT8: np.int8, trt.DataType.INT32: np.int32}
    if dt not in table:
        raise BackendError(f"unsupported TensorRT I/O data type {dt}")
    return np.dtype(table[dt])


def check_engine_file(path: str | Path, *, cuda: CudaApi | None = None, device: int = 0) -> list[str]:
    """Every reason the engine at ``path`` cannot run here, without deserializing it (preflight).

    Checks the sidecar and plan hash always, the TensorRT version when ``tensorrt`` imports and
    the compute capability when the CUDA layer (pycuda, a GPU) is available.

    Raises:
        EngineCompatError: the sidecar is missing or unreadable.
    """
    p = Path(path)
    sidecar = read_sidecar(p)
    plan_sha = hashlib.sha256(p.read_bytes()).hexdigest()
    try:
        import tensorrt

        trt_version: str | None = str(tensorrt.__version__)
    except ImportError:
        trt_version = None
    cc: tuple[int, int] | None = None
    name: str | None = None
    try:
        if cuda is None:
            from edge.backends._cuda import PyCuda

            cuda = PyCuda()
        cuda.init()
        cc, name = cuda.compute_capability(device), cuda.device_name(device)
    except Exception as exc:  # noqa: BLE001  (no pycuda / driver / GPU: that check is skipped)
        log.debug("compute capability not checked: %s", exc)
    return check_engine_compat(sidecar, plan_sha256=plan_sha, trt_version=trt_version,
                               compute_capability=cc, device_name=name)


class _Bound:
    """The activated engine: TensorRT objects, CUDA context, buffers."""

    def __init__(self) -> None:
        self.ctx: Context | None = None
        self.logger: trt.ILogger | None = None  # kept alive as long as the runtime
        self.runtime: trt.Runtime | None = None
        self.engine: trt.ICudaEngine | None = None
        self.context: trt.IExecutionContext | None = None
        self.stream: Stream | None = None
        self.start: Event | None = None
        self.end: Event | None = None
        self.host_in: np.ndarray = np.empty(0, np.float32)
        self.host_out: np.ndarray = np.empty(0, np.float32)
        self.device: dict[str, DeviceMemory] = {}
        self.bound_batch = -1


class TensorRTBackend:
    """:class:`edge.backends.Backend` on a TensorRT engine.

    Args:
        settings: ``[model]`` settings: ``path`` (the plan), ``max_batch`` and spec overrides.
        spec: use this spec instead of the one in the sidecar (``resolve_spec``).
        cuda: the CUDA layer (default :class:`edge.backends._cuda.PyCuda`); tests pass a fake.
        device: CUDA device index.

    Attributes:
        last_gpu_ms: GPU time of the last ``execute_async_v3`` (CUDA events), in ms.

    Raises:
        FileNotFoundError: no plan file. BackendError: tensorrt/pycuda missing, deserialization
        failed, I/O tensors not as the spec says. EngineCompatError: see module docstring.
    """

    name = "tensorrt"

    def __init__(self, settings: ModelSettings, spec: ModelSpec | None = None, *,
                 cuda: CudaApi | None = None, device: int = 0) -> None:
        self.model_path = Path(settings.path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"engine file not found: {self.model_path}")
        trt_mod = _import_tensorrt()
        if cuda is None:
            from edge.backends._cuda import PyCuda

            try:
                cuda = PyCuda()
            except ImportError as exc:
                raise BackendError(str(exc)) from exc
        self._cuda: CudaApi = cuda
        self._device = device
        self._lock = threading.Lock()
        self._b: _Bound | None = None
        self.last_gpu_ms: float | None = None

        sidecar = read_sidecar(self.model_path)
        plan = self.model_path.read_bytes()
        self.model_hash: str = hashlib.sha256(plan).hexdigest()
        cuda.init()
        require_engine_compat(self.model_path, sidecar, plan_sha256=self.model_hash,
                              trt_version=str(trt_mod.__version__),
                              compute_capability=cuda.compute_capability(device),
                              device_name=cuda.device_name(device))
        self.spec: ModelSpec = spec if spec is not None else resolve_spec(self.model_path, settings)
        self.precision: str = str(sidecar.get("precision", "fp32"))
        self.max_batch: int = int(settings.max_batch)
        self._fixed_batch: int | None = None
        self._dynamic = False
        self._activate(plan)

    # -- activation -----------------------------------------------------------------------------

    def _activate(self, plan: bytes) -> None:
        import tensorrt as trt

        b = _Bound()
        b.ctx = self._cuda.make_context(self._device)
        try:
            b.logger = trt.Logger(trt.Logger.WARNING)
            b.runtime = trt.Runtime(b.logger)
            b.engine = b.runtime.deserialize_cuda_engine(plan)
            if b.engine is None:
                raise BackendError(f"TensorRT could not deserialize {self.model_path} (see the TensorRT log above)")
            b.context = b.engine.create_execution_context()
            if b.context is None:
                raise BackendError(f"TensorRT could not create an execution context for {self.model_path}")
            self._bind(b)
        except BaseException:
            self._release(b, pushed=True)
            raise
        b.ctx.pop()
        self._b = b

    def _bind(self, b: _Bound) -> None:
        import tensorrt as trt

        engine, context = b.engine, b.context
        assert engine is not None and context is not None
        s = self.spec
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [s.input_name] or s.output_name not in outputs:
            raise BackendError(f"{self.model_path}: engine I/O tensors inputs {inputs} / outputs {outputs} do not "
                               f"match the spec (input {s.input_name!r}, output {s.output_name!r})")
        H, W = s.input_size
        in_shape = _dims(engine.get_tensor_shape(s.input_name))
        if not (len(in_shape) == 4 and in_shape[1] == 3 and in_shape[2] in (-1, H) and in_shape[3] in (-1, W)):
            raise BackendError(f"{self.model_path}: engine input {s.input_name!r} shape {list(in_shape)}, "
                               f"expected [N,3,{H},{W}]")
        self._dynamic = -1 in in_shape
        hi: tuple[int, ...] = in_shape
        if self._dynamic:
            profile = engine.get_tensor_profile_shape(s.input_name, 0)
            lo, hi = _dims(profile[0]), _dims(profile[2])
            if not (lo[2] <= H <= hi[2] and lo[3] <= W <= hi[3]):
                raise BackendError(f"{self.model_path}: optimization profile of {s.input_name!r} spans "
                                   f"{list(lo)}..{list(hi)}, which excludes H,W = {H},{W}")
        if in_shape[0] == -1:
            self._fixed_batch = None
            self.max_batch = max(1, min(self.max_batch, hi[0]))
        else:
            self._fixed_batch = in_shape[0]
            self.max_batch = in_shape[0]
        out_shape = _dims(engine.get_tensor_shape(s.output_name))
        C = s.num_classes
        if len(out_shape) != 2 or out_shape[1] != C:
            raise BackendError(f"{self.model_path}: engine output {s.output_name!r} shape {list(out_shape)}, "
                               f"expected [N,{C}] ({C} labels)")
        n = self.max_batch
        b.host_in = self._cuda.pagelocked_empty((n, 3, H, W), _np_dtype(engine.get_tensor_dtype(s.input_name)))
        b.host_out = self._cuda.pagelocked_empty((n, C), _np_dtype(engine.get_tensor_dtype(s.output_name)))
        b.device[s.input_name] = self._cuda.mem_alloc(b.host_in.nbytes)
        b.device[s.output_name] = self._cuda.mem_alloc(b.host_out.nbytes)
        if self._dynamic and not context.set_input_shape(s.input_name, (n, 3, H, W)):
            raise BackendError(f"{self.model_path}: set_input_shape({s.input_name!r}, {[n, 3, H, W]}) failed")
        b.bound_batch = n
        for extra in outputs:  # every I/O tensor needs an address; extra outputs are ignored
            if extra != s.output_name:
                shape = _dims(context.get_tensor_shape(extra))
                nbytes = int(np.prod([max(d, 1) for d in shape])) * _np_dtype(engine.get_tensor_dtype(extra)).itemsize
                b.device[extra] = self._cuda.mem_alloc(nbytes)
        for name, mem in b.device.items():
            if not context.set_tensor_address(name, int(mem)):
                raise BackendError(f"{self.model_path}: set_tensor_address({name!r}) failed")
        b.stream = self._cuda.stream()
        b.start, b.end = self._cuda.event(), self._cuda.event()

    # -- inference ------------------------------------------------------------------------------

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``[N,3,H,W] float32`` -> probabilities ``[N,C] float32``; chunks of ``max_batch``."""
        check_batch(batch, self.spec, self.name)
        n, C = batch.shape[0], self.spec.num_classes
        if n == 0:
            return np.empty((0, C), np.float32)
        with self._lock:
            b = self._b
            if b is None or b.ctx is None:
                raise BackendError(f"tensorrt backend for {self.model_path} is closed")
            b.ctx.push()
            try:
                parts = [self._run_chunk(b, batch[i:i + self.max_batch]) for i in range(0, n, self.max_batch)]
            finally:
                b.ctx.pop()
        raw = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return as_probabilities(raw, self.spec)

    def _run_chunk(self, b: _Bound, chunk: np.ndarray) -> np.ndarray:
        assert b.context is not None and b.stream is not None and b.start is not None and b.end is not None
        s = self.spec
        k = chunk.shape[0]
        run_n = self._fixed_batch or k
        np.copyto(b.host_in[:k], chunk, casting="same_kind")
        if run_n > k:
            b.host_in[k:run_n] = 0
        if self._dynamic and run_n != b.bound_batch:
            H, W = s.input_size
            if not b.context.set_input_shape(s.input_name, (run_n, 3, H, W)):
                raise BackendError(f"{self.model_path}: set_input_shape({s.input_name!r}, "
                                   f"{[run_n, 3, H, W]}) failed")
            b.bound_batch = run_n
        self._cuda.memcpy_htod_async(b.device[s.input_name], b.host_in[:run_n], b.stream)
        b.start.record(b.stream)
        if not b.context.execute_async_v3(b.stream.handle):
            raise BackendError(f"{self.model_path}: execute_async_v3 failed (see the TensorRT log)")
        b.end.record(b.stream)
        self._cuda.memcpy_dtoh_async(b.host_out[:run_n], b.device[s.output_name], b.stream)
        b.stream.synchronize()
        self.last_gpu_ms = b.end.time_since(b.start)
        return np.array(b.host_out[:k], dtype=np.float32)  # copy: the host buffer is reused

    # -- teardown -------------------------------------------------------------------------------

    def _release(self, b: _Bound, pushed: bool) -> None:
        if b.ctx is None:
            return
        if not pushed:
            b.ctx.push()
        try:
            for mem in b.device.values():
                mem.free()
            b.device.clear()
            b.context = None
            b.engine = None
            b.runtime = None
            b.logger = None
            b.stream = b.start = b.end = None
        finally:
            b.ctx.pop()
            b.ctx.detach()
            b.ctx = None

    def close(self) -> None:
        """Free buffers, drop the engine and detach the CUDA context (idempotent)."""
        with self._lock:
            b, self._b = self._b, None
            if b is not None:
                self._release(b, pushed=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TensorRTBackend({self.model_path.name}, {self.precision}, max_batch={self.max_batch})"
