"""The engine step of ``edgeqc build``: ONNX (Q/DQ, FP16 or FP32) -> plan + sidecar, on the target device.

Composes :mod:`trt_build.builder` (TensorRT), the GPU query of the runtime's CUDA layer
(:class:`edge.backends._cuda.PyCuda`: device name and compute capability for the sidecar) and
:mod:`trt_build.sidecar` (atomic write).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.model_spec import ModelSpec
from edge.onnx_info import file_sha256
from trt_build.builder import BuildOptions, EngineBuildError, build_plan, import_tensorrt
from trt_build.sidecar import make_sidecar, write_engine


@dataclass(frozen=True)
class EngineResult:
    """The written engine: ``path``, ``sidecar`` path and dict."""

    path: Path
    sidecar_path: Path
    sidecar: dict[str, Any]


def query_gpu(device: int = 0) -> tuple[str, tuple[int, int]]:
    """``(name, (major, minor))`` of GPU ``device`` through pycuda (the runtime's CUDA layer).

    Raises:
        EngineBuildError: pycuda or the GPU is not available.
    """
    try:
        from edge.backends._cuda import PyCuda

        cuda = PyCuda()
        cuda.init()
        return cuda.device_name(device), cuda.compute_capability(device)
    except Exception as exc:  # noqa: BLE001  pycuda raises its own error types
        raise EngineBuildError(f"cannot read the GPU's name and compute capability for the sidecar ({exc}); "
                               "install pycuda on the device (pip install 'edgeqc[tensorrt]')") from None


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    spec: ModelSpec,
    options: BuildOptions,
    *,
    calib_sha256: str | None = None,
    quantization: Mapping[str, Any] | None = None,
    device: int = 0,
) -> EngineResult:
    """Build ``onnx_path`` into ``engine_path`` (+ ``<engine>.json``), replacing old files only on success.

    Raises:
        trt_build.builder.TensorRTMissing: no TensorRT here (checked first, before any work).
        EngineBuildError / OnnxParseError / trt_build.profile.ProfileError: the build failed;
            a previous engine at ``engine_path`` is left as it was.
    """
    import_tensorrt()
    name, cc = query_gpu(device)
    built = build_plan(onnx_path, options, input_hw=spec.input_size)
    side = make_sidecar(built, device_name=name, compute_capability=cc, spec=spec,
                        onnx_sha256=file_sha256(onnx_path), calib_sha256=calib_sha256,
                        quantization=quantization, onnx_path=str(onnx_path))
    p, s = write_engine(engine_path, built.plan, side)
    return EngineResult(p, s, side)
