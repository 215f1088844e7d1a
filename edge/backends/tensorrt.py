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
4. **Overlap** (what the inspection loop uses; :attr:`inflight_slots` batches in flight): each
   *slot* owns an execution context, a CUDA stream, two events, a page-locked input
   ``[max_batch,3,H,W]``, a page-locked output and the device buffers. The caller preprocesses
   straight into :meth:`input_buffer` of a free slot (no host copy), :meth:`submit` queues H2D,
   ``execute_async_v3`` and D2H on that slot's stream and returns at once, and
   :meth:`Pending.wait` synchronizes only that stream. So the CPU prepares batch k+1 while the
   GPU runs batch k, and two batches never share a stream, a context or a buffer. Every copy is
   asynchronous from page-locked memory (a copy from pageable memory would be synchronous).
   Slot 0 is made at activation (and serves :meth:`infer`); further slots on first use.
5. **close**: buffers freed and the context detached, with the context pushed.

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

log = logging.getLogger("edgeqc.backends.tensorrt")


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


class _Slot:
    """One batch in flight: execution context, stream, events, page-locked and device buffers."""

    def __init__(self) -> None:
        self.context: trt.IExecutionContext | None = None
        self.stream: Stream | None = None
        self.start: Event | None = None
        self.end: Event | None = None
        self.host_in: np.ndarray = np.empty(0, np.float32)
        self.host_out: np.ndarray = np.empty(0, np.float32)
        self.device: dict[str, DeviceMemory] = {}
        self.bound_batch = -1
        self.busy = False  # submitted and not yet waited for


class _Bound:
    """The activated engine: TensorRT objects, CUDA context, slots (slot 0 = the attributes of
    this object itself, for the synchronous path)."""

    def __init__(self) -> None:
        self.ctx: Context | None = None
        self.logger: trt.ILogger | None = None  # kept alive as long as the runtime
        self.runtime: trt.Runtime | None = None
        self.engine: trt.ICudaEngine | None = None
        self.slots: list[_Slot] = []

    @property
    def context(self) -> trt.IExecutionContext | None:
        return self.slots[0].context if self.slots else None


class Pending:
    """A batch submitted with :meth:`TensorRTBackend.submit`; :meth:`wait` gives its probabilities."""

    def __init__(self, backend: TensorRTBackend, slot: int, n: int) -> None:
        self._backend, self.slot, self.n = backend, slot, n
        self._result: np.ndarray | None = None

    def wait(self) -> np.ndarray:
        """Block until this batch's stream is done; probabilities ``[n,C] float32`` (a copy).

        Raises:
            BackendError: the backend was closed meanwhile.
        """
        if self._result is None:
            self._result = self._backend._wait(self.slot, self.n)
        return self._result


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
        self._input_float32 = True
        self._outputs: list[str] = []
        self._activate(plan)

    @property
    def inflight_slots(self) -> int:
        """Batches that can be in flight at once through :meth:`submit` (0: this engine's input
        is not float32, so only :meth:`infer` is offered)."""
        return 2 if self._input_float32 else 0

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
            context = b.engine.create_execution_context()
            if context is None:
                raise BackendError(f"TensorRT could not create an execution context for {self.model_path}")
            self._bind(b, context)
        except BaseException:
            self._release(b, pushed=True)
            raise
        b.ctx.pop()
        self._b = b

    def _bind(self, b: _Bound, context: trt.IExecutionContext) -> None:
        import tensorrt as trt

        engine = b.engine
        assert engine is not None
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
        self._input_float32 = _np_dtype(engine.get_tensor_dtype(s.input_name)) == np.float32
        self._outputs = outputs
        slot = _Slot()
        b.slots.append(slot)  # before filling: a failure half-way still frees what was made
        self._fill_slot(b, slot, context)

    def _fill_slot(self, b: _Bound, slot: _Slot, context: trt.IExecutionContext) -> None:
        """Buffers, tensor addresses, stream and events of ``slot`` (context pushed)."""
        engine = b.engine
        assert engine is not None
        s = self.spec
        H, W = s.input_size
        C = s.num_classes
        slot.context = context
        n = self.max_batch
        slot.host_in = self._cuda.pagelocked_empty((n, 3, H, W), _np_dtype(engine.get_tensor_dtype(s.input_name)))
        slot.host_out = self._cuda.pagelocked_empty((n, C), _np_dtype(engine.get_tensor_dtype(s.output_name)))
        slot.device[s.input_name] = self._cuda.mem_alloc(slot.host_in.nbytes)
        slot.device[s.output_name] = self._cuda.mem_alloc(slot.host_out.nbytes)
        if self._dynamic and not context.set_input_shape(s.input_name, (n, 3, H, W)):
            raise BackendError(f"{self.model_path}: set_input_shape({s.input_name!r}, {[n, 3, H, W]}) failed")
        slot.bound_batch = n
        for extra in self._outputs:  # every I/O tensor needs an address; extra outputs are ignored
            if extra != s.output_name:
                shape = _dims(context.get_tensor_shape(extra))
                nbytes = int(np.prod([max(d, 1) for d in shape])) * _np_dtype(engine.get_tensor_dtype(extra)).itemsize
                slot.device[extra] = self._cuda.mem_alloc(nbytes)
        for name, mem in slot.device.items():
            if not context.set_tensor_address(name, int(mem)):
                raise BackendError(f"{self.model_path}: set_tensor_address({name!r}) failed")
        slot.stream = self._cuda.stream()
        slot.start, slot.end = self._cuda.event(), self._cuda.event()

    def _slot(self, b: _Bound, index: int) -> _Slot:
        """Slot ``index``, made on first use (context pushed by the caller)."""
        if not 0 <= index < max(1, self.inflight_slots):
            raise BackendError(f"tensorrt: slot {index} out of range (inflight_slots = {self.inflight_slots})")
        while len(b.slots) <= index:
            assert b.engine is not None
            context = b.engine.create_execution_context()
            if context is None:
                raise BackendError(f"TensorRT could not create an execution context for {self.model_path}")
            slot = _Slot()
            b.slots.append(slot)
            self._fill_slot(b, slot, context)
        return b.slots[index]

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
                slot = b.slots[0]
                if slot.busy:
                    raise BackendError("tensorrt: infer while slot 0 has a submitted batch (call wait() first)")
                parts = []
                for i in range(0, n, self.max_batch):
                    chunk = batch[i:i + self.max_batch]
                    k = chunk.shape[0]
                    np.copyto(slot.host_in[:k], chunk, casting="same_kind")
                    self._enqueue(slot, k)
                    parts.append(self._collect(slot, k))
            finally:
                b.ctx.pop()
        raw = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return as_probabilities(raw, self.spec)

    def _enqueue(self, slot: _Slot, k: int) -> None:
        """Queue H2D, execute, D2H of ``slot.host_in[:k]`` on the slot's stream (context pushed)."""
        assert slot.context is not None and slot.stream is not None and slot.start is not None and slot.end is not None
        s = self.spec
        run_n = self._fixed_batch or k
        if run_n > k:
            slot.host_in[k:run_n] = 0
        if self._dynamic and run_n != slot.bound_batch:
            H, W = s.input_size
            if not slot.context.set_input_shape(s.input_name, (run_n, 3, H, W)):
                raise BackendError(f"{self.model_path}: set_input_shape({s.input_name!r}, "
                                   f"{[run_n, 3, H, W]}) failed")
            slot.bound_batch = run_n
        self._cuda.memcpy_htod_async(slot.device[s.input_name], slot.host_in[:run_n], slot.stream)
        slot.start.record(slot.stream)
        if not slot.context.execute_async_v3(slot.stream.handle):
            raise BackendError(f"{self.model_path}: execute_async_v3 failed (see the TensorRT log)")
        slot.end.record(slot.stream)
        self._cuda.memcpy_dtoh_async(slot.host_out[:run_n], slot.device[s.output_name], slot.stream)

    def _collect(self, slot: _Slot, k: int) -> np.ndarray:
        """Wait for the slot's stream; raw output rows ``[k,C] float32`` (a copy: the page-locked
        buffer is reused by the next batch)."""
        assert slot.stream is not None and slot.start is not None and slot.end is not None
        slot.stream.synchronize()
        self.last_gpu_ms = slot.end.time_since(slot.start)
        return np.array(slot.host_out[:k], dtype=np.float32)

    # -- overlapped inference (the inspection loop) ---------------------------------------------

    def input_buffer(self, slot: int) -> np.ndarray:
        """The page-locked input ``[max_batch,3,H,W] float32`` of ``slot`` (0 <= slot <
        :attr:`inflight_slots`): write a batch into its first rows, then :meth:`submit`.

        Raises:
            BackendError: closed, slot out of range, or the engine's input is not float32.
        """
        if not self._input_float32:
            raise BackendError(f"{self.model_path}: engine input is not float32; use infer()")
        with self._lock:
            b, ctx = self._bound()
            ctx.push()
            try:
                return self._slot(b, slot).host_in
            finally:
                ctx.pop()

    def submit(self, slot: int, n: int) -> Pending:
        """Start the inference of the first ``n`` rows of :meth:`input_buffer` ``(slot)`` on that
        slot's stream and return at once; :meth:`Pending.wait` gives the probabilities.

        Raises:
            BackendError: closed, bad slot or ``n``, the slot still has a batch in flight, or
                TensorRT refused the shape / the enqueue.
        """
        if not 1 <= n <= self.max_batch:
            raise BackendError(f"tensorrt: submit of {n} rows, expected 1..{self.max_batch} (max_batch)")
        with self._lock:
            b, ctx = self._bound()
            ctx.push()
            try:
                sl = self._slot(b, slot)
                if sl.busy:
                    raise BackendError(f"tensorrt: slot {slot} still has a batch in flight (wait() for it first)")
                self._enqueue(sl, n)
                sl.busy = True
            finally:
                ctx.pop()
        return Pending(self, slot, n)

    def _wait(self, slot: int, n: int) -> np.ndarray:
        with self._lock:
            b, ctx = self._bound()
            ctx.push()
            try:
                sl = b.slots[slot]
                try:
                    raw = self._collect(sl, n)
                finally:
                    sl.busy = False
            finally:
                ctx.pop()
        return as_probabilities(raw, self.spec)

    def _bound(self) -> tuple[_Bound, Context]:
        b = self._b
        if b is None or b.ctx is None:
            raise BackendError(f"tensorrt backend for {self.model_path} is closed")
        return b, b.ctx

    # -- teardown -------------------------------------------------------------------------------

    def _release(self, b: _Bound, pushed: bool) -> None:
        if b.ctx is None:
            return
        if not pushed:
            b.ctx.push()
        try:
            for slot in b.slots:
                for mem in slot.device.values():
                    mem.free()
                slot.device.clear()
                slot.context = None
                slot.stream = slot.start = slot.end = None
            b.slots.clear()
            b.engine = None
            b.runtime = None
            b.logger = None
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
