"""ONNX Runtime backend (CPU execution provider).

Fixed-batch models (input ``[B,3,H,W]`` with a number B) are fed in chunks of B, the last one
zero-padded and its extra rows dropped; dynamic-batch models get chunks of ``model.max_batch``
in one ``session.run`` each.

Overlap (docs/performance.md): besides the synchronous :meth:`OnnxRuntimeBackend.infer`, the
backend offers the same ``input_buffer(slot)`` / ``submit(slot, n)`` / ``inflight_slots``
interface as the TensorRT backend. ``session.run`` then runs in one worker thread (ONNX Runtime
releases the GIL while it computes: ``onnxruntime/python/onnxruntime_pybind_state.cc``,
``py::gil_scoped_release`` around ``Run``), so the inspection thread preprocesses the next frame
and answers the previous one while the model runs: the model's core never waits for Python glue.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.backends import BackendError, as_probabilities, check_batch
from edge.model_spec import ModelSpec, resolve_spec
from edge.onnx_info import file_sha256, read_onnx_info

if TYPE_CHECKING:
    from typing_extensions import Self

    from edge.settings import ModelSettings

log = logging.getLogger("edgeqc.backends.onnxruntime")
_warned_threads: set[tuple[int, int]] = set()


def intra_op_threads(setting: int) -> int:
    """The ONNX Runtime intra-op thread count for ``model.intra_op_threads``: the setting itself,
    or :func:`default_intra_op_threads` for 0 (auto). Every session of the runtime and the bench
    takes its number from here.

    A setting above the CPUs this process may use (a config written for a bigger box) is lowered
    to that CPU count, with one WARNING: more compute threads than cores make every model call wait
    for its threads to be scheduled (fresh-user test: 99 threads on 2 CPUs, trigger -> RES p50
    ~200 ms and more than half the parts answered fail-safe). ``edgeqc preflight`` reports it too;
    the bench's ``--threads`` refuses such a number.
    """
    n = int(setting)
    if not n:
        return default_intra_op_threads()
    cpus = usable_cpus()
    if n > cpus:
        if (n, cpus) not in _warned_threads:
            _warned_threads.add((n, cpus))
            log.warning("model.intra_op_threads = %d is more than the %d CPUs this process may use: using %d "
                        "(0 = auto: %d here)", n, cpus, cpus, default_intra_op_threads(cpus))
        return cpus
    return n


def default_intra_op_threads(cpus: int | None = None) -> int:
    """ONNX Runtime intra-op threads for ``model.intra_op_threads = 0`` (auto): one core fewer than
    this process may use (at least 1, at most 4).

    The free core runs capture, the PLC link and the outputs; on the 2-core CI machines two
    spinning ONNX Runtime threads beside them doubled the inference time (BENCHMARKS.md,
    "Findings"). More than 4 threads gain little for a batch-1 224x224 classifier.
    ``cpus``: defaults to ``len(os.sched_getaffinity(0))`` (honours taskset and cgroup cpusets,
    not a CFS quota such as ``docker --cpus=2`` on a bigger host: set the number there).
    """
    if cpus is None:
        cpus = usable_cpus()
    return max(1, min(4, cpus - 1))


def usable_cpus() -> int:
    """CPUs this process may run on (``os.sched_getaffinity``; ``os.cpu_count()`` where missing)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


class OnnxRuntimeBackend:
    """:class:`edge.backends.Backend` on ``onnxruntime.InferenceSession`` (CPUExecutionProvider).

    Args:
        settings: ``[model]`` settings: ``path`` (.onnx), ``intra_op_threads`` (0 = auto:
            :func:`default_intra_op_threads`),
            ``max_batch`` (chunk size for dynamic-batch models) and the spec overrides.
        spec: use this spec instead of :func:`edge.model_spec.resolve_spec`.

    Raises:
        FileNotFoundError: no model file. ModelSpecError: spec not resolvable.
        BackendError: ONNX Runtime cannot load the model, or the spec does not fit the graph.
    """

    name = "onnxruntime"

    def __init__(self, settings: ModelSettings, spec: ModelSpec | None = None) -> None:
        import onnxruntime as ort  # absolute import: the package, not this module

        self.model_path = Path(settings.path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"model file not found: {self.model_path}")
        self.spec: ModelSpec = spec if spec is not None else resolve_spec(self.model_path, settings)
        self.precision: str = read_onnx_info(self.model_path).precision
        self.model_hash: str = file_sha256(self.model_path)
        opts = ort.SessionOptions()
        self.intra_op_threads: int = intra_op_threads(settings.intra_op_threads)
        opts.intra_op_num_threads = self.intra_op_threads
        opts.log_severity_level = 3  # errors only
        try:
            self._session = ort.InferenceSession(str(self.model_path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001  (ORT raises its own exception types)
            raise BackendError(f"onnxruntime cannot load {self.model_path}: {exc}") from None
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        s = self.spec
        if s.input_name not in inputs or s.output_name not in outputs:
            raise BackendError(f"{self.model_path}: spec input {s.input_name!r} / output {s.output_name!r} "
                               f"not in the graph (inputs {list(inputs)}, outputs {sorted(outputs)})")
        shape = list(inputs[s.input_name].shape)
        for axis, want, have in (("height", s.input_size[0], shape[2]), ("width", s.input_size[1], shape[3])):
            if isinstance(have, int) and have != want:
                raise BackendError(f"{self.model_path}: spec input {axis} {want} but input "
                                   f"{s.input_name!r} {shape} is fixed to {have}")
        self._fixed_batch: int | None = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.max_batch: int = self._fixed_batch or int(settings.max_batch)
        self._pad: np.ndarray | None = None
        if self._fixed_batch is not None:
            self._pad = np.zeros((self._fixed_batch, 3, *s.input_size), np.float32)
        self._closed = False
        self._lock = threading.Lock()  # _pad and the session between infer() callers
        self._inputs: list[np.ndarray] = []  # input_buffer(slot), made on first use
        self._jobs: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._results: list[queue.SimpleQueue[np.ndarray | BaseException]] = []
        self._busy: list[bool] = []
        self._worker: threading.Thread | None = None
        self._submit_lock = threading.Lock()  # submit() vs close(): no job after the worker's stop

    inflight_slots: int = 2
    """Batches in flight through :meth:`submit`: the worker runs one while the caller fills the other."""
    inline_when_idle: bool = True
    """The inspection loop may call :meth:`infer` on a slot's buffer instead of :meth:`submit` when
    it has nothing else to do (a lone trigger): the hand-off to the worker would cost two thread
    wake-ups of latency and overlap nothing."""

    def input_buffer(self, slot: int) -> np.ndarray:
        """The input ``[max_batch,3,H,W] float32`` (C-contiguous) of ``slot`` (0 <= slot <
        :attr:`inflight_slots`): write a batch into its first rows, then :meth:`submit`.

        Raises:
            BackendError: closed, or slot out of range.
        """
        self._check_slot(slot)
        if not self._inputs:
            H, W = self.spec.input_size
            self._inputs = [np.zeros((self.max_batch, 3, H, W), np.float32) for _ in range(self.inflight_slots)]
            self._results = [queue.SimpleQueue() for _ in range(self.inflight_slots)]
            self._busy = [False] * self.inflight_slots
        return self._inputs[slot]

    def submit(self, slot: int, n: int) -> _Pending:
        """Queue the inference of the first ``n`` rows of :meth:`input_buffer` ``(slot)`` to the
        worker thread and return at once; :meth:`_Pending.wait` gives probabilities ``[n,C] float32``.

        Raises:
            BackendError: closed, bad slot or ``n``, or the slot still has a batch in flight.
        """
        self.input_buffer(slot)
        if not 1 <= n <= self.max_batch:
            raise BackendError(f"onnxruntime: submit of {n} rows, expected 1..{self.max_batch} (max_batch)")
        with self._submit_lock:
            self._check_slot(slot)  # closed meanwhile?
            if self._busy[slot]:
                raise BackendError(f"onnxruntime: slot {slot} still has a batch in flight (wait() for it first)")
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="edgeqc-onnxruntime", daemon=True)
                self._worker.start()
            self._busy[slot] = True
            self._jobs.put((slot, n))
        return _Pending(self, slot)

    def _check_slot(self, slot: int) -> None:
        if self._closed:
            raise BackendError(f"onnxruntime backend for {self.model_path} is closed")
        if not 0 <= slot < self.inflight_slots:
            raise BackendError(f"onnxruntime: slot {slot} out of range (inflight_slots = {self.inflight_slots})")

    def _work(self) -> None:
        """Worker thread: run queued slots in order; each result (or exception) goes to its slot."""
        while True:
            job = self._jobs.get()
            if job is None:
                return
            slot, n = job
            out: np.ndarray | BaseException
            try:
                out = self._infer(self._inputs[slot][:n])
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                out = exc
            self._results[slot].put(out)

    def _wait(self, slot: int) -> np.ndarray:
        try:
            out = self._results[slot].get()
        finally:
            self._busy[slot] = False
        if isinstance(out, BaseException):
            raise out
        return out

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``[N,3,H,W] float32`` -> probabilities ``[N,C] float32`` (see :class:`edge.backends.Backend`)."""
        if self._closed:
            raise BackendError(f"onnxruntime backend for {self.model_path} is closed")
        return self._infer(batch)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """:meth:`infer` without the closed check: the worker finishes the batches queued before
        :meth:`close` (the session is released only after the worker stopped)."""
        check_batch(batch, self.spec, self.name)
        n, C = batch.shape[0], self.spec.num_classes
        if n == 0:
            return np.empty((0, C), np.float32)
        with self._lock:
            raw = self._run(batch, n)
        if raw.shape != (n, C):
            raise BackendError(f"{self.model_path}: output {self.spec.output_name!r} has shape {list(raw.shape)}, "
                               f"expected [{n},{C}] ({C} labels)")
        return as_probabilities(raw, self.spec)

    def _run(self, batch: np.ndarray, n: int) -> np.ndarray:
        session = self._session
        if session is None:
            raise BackendError(f"onnxruntime backend for {self.model_path} is closed")
        parts = []
        for start in range(0, n, self.max_batch):
            chunk = batch[start:start + self.max_batch]
            k = chunk.shape[0]
            feed = chunk
            if self._pad is not None and k < self.max_batch:
                self._pad[:k] = chunk
                self._pad[k:] = 0.0
                feed = self._pad
            raw = session.run([self.spec.output_name], {self.spec.input_name: feed})[0]
            parts.append(raw[:k])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def close(self) -> None:
        """Stop the worker (after the batches queued to it) and release the session (idempotent).
        A batch still waited for afterwards raises :class:`BackendError` instead of hanging."""
        with self._submit_lock:
            self._closed = True
            worker, self._worker = self._worker, None
            if worker is not None:
                self._jobs.put(None)
        if worker is not None:
            worker.join(timeout=10.0)
        with self._lock:
            self._session = None  # type: ignore[assignment]
        for slot, busy in enumerate(self._busy):
            if busy and self._results[slot].empty():  # its job never ran (worker stuck or gone)
                self._results[slot].put(BackendError(f"onnxruntime backend for {self.model_path} was closed "
                                                     "before this batch ran"))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OnnxRuntimeBackend({self.model_path.name}, {self.precision}, max_batch={self.max_batch})"


class _Pending:
    """A batch submitted with :meth:`OnnxRuntimeBackend.submit`."""

    __slots__ = ("_backend", "_error", "_result", "slot")

    def __init__(self, backend: OnnxRuntimeBackend, slot: int) -> None:
        self._backend, self.slot = backend, slot
        self._result: np.ndarray | None = None
        self._error: BaseException | None = None

    def wait(self) -> np.ndarray:
        """Block until the worker ran this batch; probabilities ``[n,C] float32``. A second call
        returns the same array (or raises the same error) at once.

        Raises:
            BackendError, BackendInputError: what :meth:`OnnxRuntimeBackend.infer` raised, or the
                backend was closed before the batch ran. ONNX Runtime's own exceptions
                (``onnxruntime.capi.onnxruntime_pybind11_state.*``) come through unchanged.
        """
        if self._error is not None:
            raise self._error
        if self._result is None:
            try:
                self._result = self._backend._wait(self.slot)
            except BaseException as exc:
                self._error = exc
                raise
        return self._result
