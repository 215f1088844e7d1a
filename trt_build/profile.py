"""Optimization profile choice from the ONNX input shapes (pure Python, no TensorRT).

TensorRT needs one optimization profile whenever a network input has a dynamic dimension
(``-1``): the min / opt / max shape the engine is tuned for. Rules here:

- the batch axis (axis 0) when dynamic: ``min = 1``, ``opt`` and ``max`` from the flags;
- a dynamic channel axis of an ``[N,C,H,W]`` image input: 3;
- dynamic height/width (Ultralytics exports make them dynamic): fixed to the model spec's
  ``input_size`` (the size the model was trained and calibrated at), min = opt = max;
- a fixed batch axis stays as it is (no profile needed if nothing else is dynamic); asking for
  ``max_batch`` above a fixed batch is an error, not a silent clamp.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_MAX_BATCH = 8


class ProfileError(ValueError):
    """No valid optimization profile for these inputs and flags (the message names input and axis)."""


@dataclass(frozen=True)
class InputShape:
    """One network input: ``name`` and ``dims`` (int when fixed; str axis name or None when dynamic)."""

    name: str
    dims: tuple[int | str | None, ...]

    @property
    def dynamic_axes(self) -> tuple[int, ...]:
        return tuple(i for i, d in enumerate(self.dims) if not (isinstance(d, int) and d > 0))


@dataclass(frozen=True)
class ProfileShape:
    """min / opt / max shape of one input for ``IOptimizationProfile.set_shape``."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def choose_profile(
    inputs: Sequence[InputShape],
    *,
    opt_batch: int = 1,
    max_batch: int | None = None,
    input_hw: tuple[int, int] | None = None,
) -> list[ProfileShape]:
    """Profile shapes for every input with a dynamic axis (empty list: no profile needed).

    Args:
        inputs: the network inputs as the ONNX model declares them.
        opt_batch: batch size TensorRT tunes kernels for (default 1: one part per trigger).
        max_batch: largest batch the engine accepts (``None`` = :data:`DEFAULT_MAX_BATCH`, 8,
            the default of ``model.max_batch``). An explicit value above a fixed batch is an error.
        input_hw: ``(H, W)`` for dynamic height/width (the model spec's ``input_size``).

    Raises:
        ProfileError: ``1 <= opt_batch <= max_batch`` violated, ``max_batch`` above a fixed batch,
            or a dynamic axis that cannot be chosen (named with the input).
    """
    top = DEFAULT_MAX_BATCH if max_batch is None else max_batch
    if not 1 <= opt_batch <= top:
        raise ProfileError(f"batch sizes must satisfy 1 <= opt ({opt_batch}) <= max ({top})")
    out: list[ProfileShape] = []
    for inp in inputs:
        dims = inp.dims
        if dims and isinstance(dims[0], int) and dims[0] > 0 and max_batch is not None and max_batch > dims[0]:
            raise ProfileError(f"input {inp.name!r} has a fixed batch of {dims[0]} ({_fmt(dims)}); "
                               f"--max-batch {max_batch} needs a model exported with a dynamic batch axis")
        if not inp.dynamic_axes:
            continue
        lo: list[int] = []
        mid: list[int] = []
        hi: list[int] = []
        for axis, d in enumerate(dims):
            if isinstance(d, int) and d > 0:
                lo.append(d)
                mid.append(d)
                hi.append(d)
            elif axis == 0:
                lo.append(1)
                mid.append(opt_batch)
                hi.append(top)
            elif len(dims) == 4 and axis == 1:
                lo.append(3)
                mid.append(3)
                hi.append(3)
            elif len(dims) == 4 and axis in (2, 3) and input_hw is not None:
                v = int(input_hw[axis - 2])
                lo.append(v)
                mid.append(v)
                hi.append(v)
            else:
                raise ProfileError(f"input {inp.name!r} {_fmt(dims)}: axis {axis} ({d!r}) is dynamic and edgeqc "
                                   "cannot choose its size; give the model spec an input_size (height, width) "
                                   "or export the model with that axis fixed")
        out.append(ProfileShape(inp.name, tuple(lo), tuple(mid), tuple(hi)))
    return out


def _fmt(dims: Sequence[int | str | None]) -> str:
    return "[" + ",".join(str(d) if d is not None else "?" for d in dims) + "]"


def onnx_input_shapes(path: str) -> list[InputShape]:
    """The real inputs (initializers excluded) of the ONNX model at ``path``."""
    from edge.onnx_info import read_onnx_info

    info = read_onnx_info(path)
    return [InputShape(t.name, tuple(t.shape)) for t in info.inputs]
