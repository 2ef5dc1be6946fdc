"""Real-ESRGAN's SRVGGNetCompact on gpustd (realesr-general-x4v3, realesr-animevideov3): a plain
stack of 3x3 convs with PReLU, a pixel shuffle, and the nearest-upsampled input added.

    model = SRVGGNetCompact.from_state_dict(tensors, device=device)
    out = model(x)                    # [1, 3, H, W] -> [1, 3, H*s, W*s]

Keys: `body.0` conv, `body.1` PReLU, ... `body.{2*num_conv+2}` the last conv with
out_nc * scale² outputs. torch: spandrel's `Compact` architecture.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

import gpustd
from gpucore import Device, default_device
from gpustd import Tensor
from gpustd.nn import conv2d, upsample_nearest2x

from .esrgan import pixel_shuffle

__all__ = ["SRVGGNetCompact", "prelu"]


def prelu(x: Tensor, slope: Tensor) -> Tensor:
    """max(x, 0) + slope * min(x, 0), slope one per channel [1, C, 1, 1]. torch: `F.prelu`."""
    return gpustd.maximum(x, 0.0) + gpustd.minimum(x, 0.0) * slope


class SRVGGNetCompact:
    """Real-ESRGAN's compact network; `scale` 1, 2, 4 or 8 (the nearest base upsampling is
    done by repeated 2x)."""

    def __init__(self, weights: Mapping[str, Tensor], *, num_conv: int, out_nc: int,
                 scale: int) -> None:
        self.weights = dict(weights)
        self.num_conv, self.out_nc, self.scale = num_conv, out_nc, scale

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, dtype: Any = np.float32,
                        device: Device | None = None) -> SRVGGNetCompact:
        """Build from `body.*` numpy arrays. Raises ValueError for a layout that does not fit."""
        device = device or default_device()
        indices = sorted({int(key.split(".")[1]) for key in state if key.startswith("body.")})
        last = indices[-1] if indices else -1
        if last < 2 or last % 2 or indices != list(range(last + 1)):
            raise ValueError(f"not an SRVGGNetCompact state dict (body indices {indices[:6]}...)")
        in_nc = int(np.shape(state["body.0.weight"])[1])
        outputs = int(np.shape(state[f"body.{last}.weight"])[0])
        scale = _scale(outputs, in_nc)
        weights = {}
        for index in indices:
            for kind in (("weight", "bias") if index % 2 == 0 else ("weight",)):
                value = np.asarray(state[f"body.{index}.{kind}"], dtype=np.float32)
                if index % 2:  # PReLU slopes, broadcast over [N, C, H, W]
                    value = value.reshape(1, -1, 1, 1)
                weights[f"body.{index}.{kind}"] = Tensor.from_numpy(value, dtype=dtype,
                                                                    device=device)
        return cls(weights, num_conv=(last - 2) // 2, out_nc=outputs // scale**2, scale=scale)

    @property
    def dtype(self) -> np.dtype:
        return self.weights["body.0.weight"].dtype

    def __call__(self, x: Tensor) -> Tensor:
        """[N, C, H, W] -> [N, out_nc, H*scale, W*scale]. torch: `SRVGGNetCompact.forward`."""
        h = x
        # 1. conv + PReLU pairs
        for index in range(0, 2 * self.num_conv + 2, 2):
            h = conv2d(h, self.weights[f"body.{index}.weight"],
                       self.weights[f"body.{index}.bias"], padding=1)
            h = prelu(h, self.weights[f"body.{index + 1}.weight"])
        last = 2 * self.num_conv + 2
        h = conv2d(h, self.weights[f"body.{last}.weight"], self.weights[f"body.{last}.bias"],
                   padding=1)
        # 2. sub-pixel upsampling, plus the input upsampled nearest (the residual it learns)
        base = x
        for _ in range(int(math.log2(self.scale))):
            base = upsample_nearest2x(base)
        return pixel_shuffle(h, self.scale) + base if self.scale > 1 else h + base


def _scale(outputs: int, in_nc: int) -> int:
    for out_nc in (in_nc, 3, 1):
        scale = math.isqrt(outputs // out_nc) if outputs % out_nc == 0 else 0
        if scale and scale * scale * out_nc == outputs and scale in (1, 2, 4, 8):
            return scale
    raise ValueError(f"SRVGGNetCompact: last conv has {outputs} outputs, not out_nc * scale² "
                     "for a scale of 1, 2, 4 or 8")
