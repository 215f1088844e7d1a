"""Thin typed wrapper around the pycuda calls the TensorRT backend needs.

pycuda has no type stubs; everything it returns is ``Any``. This module is the only place that
touches pycuda, and gives the TensorRT backend a typed surface (:class:`CudaApi`) that unit
tests replace with a fake (the only mocks allowed in edgeqc: CUDA/TensorRT). pycuda is
imported when :class:`PyCuda` is created, never at module import.

pycuda API used (pycuda.driver, 2022.2+): ``init``, ``Device(i).name/compute_capability/
make_context``, ``Context.pop`` (static) / ``ctx.push`` / ``ctx.detach``, ``pagelocked_empty``,
``mem_alloc``, ``Stream``, ``Event``, ``memcpy_htod_async``, ``memcpy_dtoh_async``.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class DeviceMemory(Protocol):
    """A device allocation: ``int(mem)`` is the device pointer."""

    def __int__(self) -> int: ...

    def free(self) -> None: ...


class Stream(Protocol):
    @property
    def handle(self) -> int: ...

    def synchronize(self) -> None: ...


class Event(Protocol):
    def record(self, stream: Stream) -> None: ...

    def time_since(self, start: Event) -> float:
        """Milliseconds from ``start`` to this event (both recorded and completed)."""
        ...


class Context(Protocol):
    def push(self) -> None:
        """Make the context current in the calling thread."""
        ...

    def pop(self) -> None:
        """Remove it from the calling thread's context stack."""
        ...

    def detach(self) -> None:
        """Release it (after the last pop)."""
        ...


class CudaApi(Protocol):
    """What the TensorRT backend needs from CUDA."""

    def init(self) -> None: ...

    def device_name(self, device: int) -> str: ...

    def compute_capability(self, device: int) -> tuple[int, int]: ...

    def make_context(self, device: int) -> Context:
        """Create a context on ``device``; it is current (pushed) in the calling thread."""
        ...

    def pagelocked_empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray: ...

    def mem_alloc(self, nbytes: int) -> DeviceMemory: ...

    def stream(self) -> Stream: ...

    def event(self) -> Event: ...

    def memcpy_htod_async(self, dst: DeviceMemory, src: np.ndarray, stream: Stream) -> None:
        """Copy ``src.nbytes`` bytes from page-locked ``src`` to ``dst``."""
        ...

    def memcpy_dtoh_async(self, dst: np.ndarray, src: DeviceMemory, stream: Stream) -> None:
        """Copy ``dst.nbytes`` bytes from ``src`` into page-locked ``dst``."""
        ...


class _PyCudaContext:
    def __init__(self, drv: Any, ctx: Any) -> None:
        self._drv = drv
        self._ctx = ctx

    def push(self) -> None:
        self._ctx.push()

    def pop(self) -> None:
        self._drv.Context.pop()

    def detach(self) -> None:
        self._ctx.detach()


class _PyCudaStream:
    def __init__(self, stream: Any) -> None:
        self.raw = stream

    @property
    def handle(self) -> int:
        return int(self.raw.handle)

    def synchronize(self) -> None:
        self.raw.synchronize()


def _raw_stream(stream: Stream) -> Any:
    return stream.raw if isinstance(stream, _PyCudaStream) else None


class _PyCudaEvent:
    def __init__(self, event: Any) -> None:
        self.raw = event

    def record(self, stream: Stream) -> None:
        self.raw.record(stream.raw if isinstance(stream, _PyCudaStream) else None)

    def time_since(self, start: Event) -> float:
        other = start.raw if isinstance(start, _PyCudaEvent) else start
        return float(self.raw.time_since(other))


class PyCuda:
    """:class:`CudaApi` on pycuda.driver.

    Raises:
        ImportError: pycuda is not installed (or libcuda is missing) — the message says so.
    """

    def __init__(self) -> None:
        try:
            import pycuda.driver as drv
        except ImportError as exc:
            raise ImportError(f"the TensorRT backend needs pycuda (pip install 'edgeqc[tensorrt]', "
                              f"built against the device's CUDA): {exc}") from exc
        self._drv: Any = drv

    def init(self) -> None:
        self._drv.init()

    def device_name(self, device: int) -> str:
        return str(self._drv.Device(device).name())

    def compute_capability(self, device: int) -> tuple[int, int]:
        major, minor = self._drv.Device(device).compute_capability()
        return (int(major), int(minor))

    def make_context(self, device: int) -> Context:
        return _PyCudaContext(self._drv, self._drv.Device(device).make_context())

    def pagelocked_empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        arr: np.ndarray = self._drv.pagelocked_empty(shape, dtype)
        return arr

    def mem_alloc(self, nbytes: int) -> DeviceMemory:
        mem: DeviceMemory = self._drv.mem_alloc(max(1, int(nbytes)))
        return mem

    def stream(self) -> Stream:
        return _PyCudaStream(self._drv.Stream())

    def event(self) -> Event:
        return _PyCudaEvent(self._drv.Event())

    def memcpy_htod_async(self, dst: DeviceMemory, src: np.ndarray, stream: Stream) -> None:
        self._drv.memcpy_htod_async(dst, src, _raw_stream(stream))

    def memcpy_dtoh_async(self, dst: np.ndarray, src: DeviceMemory, stream: Stream) -> None:
        self._drv.memcpy_dtoh_async(dst, src, _raw_stream(stream))
