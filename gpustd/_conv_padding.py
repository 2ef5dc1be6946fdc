"""How `gpustd.nn.Conv2d` layers pad inside a block: with zeros (torch's default) or
circularly, wrapping each image around its edges (torch's `padding_mode="circular"`, which
the WebUI sets on every Conv2d of the model for its "Tiling" option: pictures that tile
seamlessly). A context, not a layer attribute, so that every Conv2d a generation runs (the
UNet's, the VAE's and its float16 twin's) follows one switch; `gpustd.capture` keys its
recordings by it, so a replay never runs the other mode's dispatches.

    with padding_mode("circular"):
        y = model(x)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["PADDING_MODES", "padding_mode", "padding_mode_in_effect"]

PADDING_MODES = ("zeros", "circular")
_MODE: ContextVar[str] = ContextVar("gpustd_conv_padding", default="zeros")


def padding_mode_in_effect() -> str:
    """"zeros" or "circular": how Conv2d layers pad here."""
    return _MODE.get()


@contextmanager
def padding_mode(mode: str) -> Iterator[None]:
    """Conv2d layers pad by `mode` ("zeros" or "circular") inside the block."""
    if mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {mode!r}")
    token = _MODE.set(mode)
    try:
        yield
    finally:
        _MODE.reset(token)
