"""Argument groups shared by ``edgeqc calibrate``, ``evaluate`` and ``build`` (argparse only; no
heavy imports here).

The model spec comes from the model itself (metadata, labels.txt) and the ``[model]`` section
of ``--config``; the flags below override single fields, which is what a plain torch export
such as mt-effnet-lite0 needs (its ImageNet mean/std live only in its model card).
"""

from __future__ import annotations

import argparse
from typing import Any


def add_spec_args(p: argparse.ArgumentParser) -> None:
    """``--config`` plus per-field model spec overrides."""
    g = p.add_argument_group("model spec (default: from the model's metadata / labels.txt / --config)")
    g.add_argument("--config", help="TOML settings file; its [model] section gives labels and preprocessing")
    g.add_argument("--labels", nargs="+", metavar="LABEL", help="class names in output order")
    g.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"), help="model input height and width, px")
    g.add_argument("--resize", choices=["stretch", "center_crop", "letterbox"])
    g.add_argument("--interpolation", choices=["pillow_bilinear", "area", "linear", "nearest", "cubic"])
    g.add_argument("--channel-order", choices=["RGB", "BGR"])
    g.add_argument("--scale", type=float, help="pixel scale before mean/std (default 1/255)")
    g.add_argument("--mean", nargs=3, type=float, metavar=("C0", "C1", "C2"), help="per-channel mean after scaling")
    g.add_argument("--std", nargs=3, type=float, metavar=("C0", "C1", "C2"), help="per-channel std after scaling")
    g.add_argument("--pass-class", action="append", metavar="LABEL",
                   help="label that means a good part (repeatable; default: decision.pass_classes, 'free')")


def model_settings(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """``(ModelSettings, pass classes)`` from ``--config`` and the override flags.

    Raises:
        edge.settings.ConfigError: bad config file or value.
    """
    from edge.settings import load_settings

    s = load_settings(getattr(args, "config", None))
    model = s.model.model_dump()
    for field, attr in (("labels", "labels"), ("input_size", "input_size"), ("resize", "resize"),
                        ("interpolation", "interpolation"), ("channel_order", "channel_order"),
                        ("scale", "scale"), ("mean", "mean"), ("std", "std")):
        v = getattr(args, attr, None)
        if v is not None:
            model[field] = v
    settings = load_settings(getattr(args, "config", None), model=model)
    passes = list(getattr(args, "pass_class", None) or settings.decision.pass_classes)
    return settings.model, passes
