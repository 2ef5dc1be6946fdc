"""The lineart_anime annotator's network (pix2pix's UnetGenerator with InstanceNorm: netG.pth,
8 downsamplings of 64..512 channels) on gpustd.

    model = UnetGenerator.from_state_dict(tensors, device=device)
    lines = model(x)                  # [1, 3, H, W] in -1..1 -> [1, 1, H, W] in -1..1

Each level halves the picture with a 4x4 stride-2 conv, passes it to the level below, doubles
it back with a 4x4 stride-2 transposed conv and sets it beside its own input (the skip); the
levels' depth and widths are read from the file. H and W must be multiples of 2^levels.
Keys nest as torch's modules do: `model.model.0` (the outermost down conv), `model.model.3`
(its up conv), then `model.model.1.model.{1,5}` one level in, `...model.3.model.{1,5}`
below, the innermost's up conv at `.model.3`. torch: controlnet_aux.lineart_anime.UnetGenerator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

import gpustd
from gpucore import Device, default_device
from gpustd import Tensor
from gpustd.nn import concat, conv2d, conv_transpose2d

from .lineart import instance_norm

__all__ = ["UnetGenerator"]


def _levels(state: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(down conv, up conv) names of each level, outermost first."""
    levels = [("model.model.0", "model.model.3")]
    prefix = "model.model.1.model."
    while f"{prefix}1.weight" in state:
        if f"{prefix}5.weight" in state:  # a level with a level below it
            levels.append((f"{prefix}1", f"{prefix}5"))
            prefix = f"{prefix}3.model."
        else:  # the innermost
            levels.append((f"{prefix}1", f"{prefix}3"))
            break
    return levels


class UnetGenerator:
    """pix2pix's U-Net generator (InstanceNorm, biased convs, no dropout)."""

    def __init__(self, weights: Mapping[str, Tensor], levels: list[tuple[str, str]]) -> None:
        self.weights = dict(weights)
        self.levels = levels

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, dtype: Any = np.float32,
                        device: Device | None = None) -> UnetGenerator:
        """Build from the state dict's numpy arrays (a `module.` prefix dropped). ValueError
        naming a missing tensor."""
        device = device or default_device()
        levels = _levels(state)
        names = [f"{conv}.{kind}" for level in levels for conv in level
                 for kind in ("weight", "bias")]
        missing = [name for name in names if name not in state]
        if missing or len(levels) < 2:
            raise ValueError(f"no tensor {(missing or ['model.model.1.model.1.weight'])[0]}: "
                             "not a pix2pix UnetGenerator (lineart_anime's netG.pth)")
        return cls({name: Tensor.from_numpy(np.asarray(state[name], np.float32), dtype=dtype,
                                            device=device) for name in names}, levels)

    @property
    def device(self) -> Device:
        return self.weights["model.model.0.weight"].device

    @property
    def multiple(self) -> int:
        """What the picture's sides must be multiples of."""
        return 2 ** len(self.levels)

    def _down(self, x: Tensor, name: str) -> Tensor:
        return conv2d(x, self.weights[f"{name}.weight"], self.weights[f"{name}.bias"],
                      stride=2, padding=1)

    def _up(self, x: Tensor, name: str) -> Tensor:
        return conv_transpose2d(gpustd.maximum(x, 0.0), self.weights[f"{name}.weight"],
                                self.weights[f"{name}.bias"], stride=2, padding=1)

    def _level(self, x: Tensor, depth: int) -> Tensor:
        """Level `depth` (1 = below the outermost): its input beside what it makes of it."""
        down, up = self.levels[depth]
        y = self._down(gpustd.maximum(x, x * 0.2), down)  # LeakyReLU(0.2)
        if depth + 1 < len(self.levels):
            y = self._level(instance_norm(y, relu=False), depth + 1)
        return concat([x, instance_norm(self._up(y, up), relu=False)], axis=1)

    def __call__(self, x: Tensor) -> Tensor:
        """[N, 3, H, W] (-1..1) -> [N, 1, H, W] (tanh). torch: `UnetGenerator.forward`."""
        height, width = x.shape[2:]
        if height % self.multiple or width % self.multiple:
            raise ValueError(f"UnetGenerator: {width}x{height} is not a multiple of "
                             f"{self.multiple} on each side")
        down, up = self.levels[0]
        return gpustd.tanh(self._up(self._level(self._down(x, down), 1), up))
