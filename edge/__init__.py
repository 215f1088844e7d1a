"""edgeqc: edge inference for factory quality control."""

from __future__ import annotations

from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[1]


def checkout_path(relative: str, marker: str = "") -> Path:
    """``relative`` (e.g. ``"../shared"``, ``"systemd"``) as seen from a checkout of edgeqc: first
    from the current folder, where ``relative/marker`` exists (the README's ``pip install .`` puts
    this package in site-packages, away from the checkout it is run from), else from the checkout
    this package lives in (an editable install run from elsewhere). Resolved, not checked."""
    here = Path(relative).resolve()
    if (here / marker).exists():
        return here
    return (_CHECKOUT / relative).resolve()
