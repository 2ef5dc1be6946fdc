"""The softedge_hed annotator's network (lllyasviel's ControlNetHED_Apache2, ControlNetHED.pth)
on gpustd.

    model = ControlNetHED.from_state_dict(tensors, device=device)
    sides = model(x)                  # [1, 3, H, W] in 0..255 -> five [1, 1, h_i, w_i]

Five VGG-like blocks of 3x3 convs with ReLU (64, 128, 256, 512, 512 channels; each block after
the first starts with a 2x2 max pool), each block's output projected to one channel by a 1x1
conv: the side outputs at 1, 1/2, ... 1/16 of the picture. The input is the RGB picture in
0..255 less the learnt `norm`. Keys: `norm`, `block{i}.convs.{j}`, `block{i}.projection`.
torch: controlnet_aux.hed.ControlNetHED_Apache2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

import gpustd
from gpucore import Device, default_device
from gpustd import Tensor
from gpustd.nn import conv2d, max_pool2d

__all__ = ["ControlNetHED"]

_LAYERS = (2, 2, 3, 3, 3)  # 3x3 convs per block


class ControlNetHED:
    """ControlNetHED_Apache2: the picture's five side outputs."""

    def __init__(self, weights: Mapping[str, Tensor]) -> None:
        self.weights = dict(weights)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, dtype: Any = np.float32,
                        device: Device | None = None) -> ControlNetHED:
        """Build from the state dict's numpy arrays. ValueError naming a missing tensor."""
        device = device or default_device()
        names = ["norm"]
        for block, layers in enumerate(_LAYERS, 1):
            for name in [f"convs.{j}" for j in range(layers)] + ["projection"]:
                names += [f"block{block}.{name}.weight", f"block{block}.{name}.bias"]
        missing = [name for name in names if name not in state]
        if missing:
            raise ValueError(f"no tensor {missing[0]}: not a ControlNetHED_Apache2 network "
                             "(ControlNetHED.pth)")
        return cls({name: Tensor.from_numpy(np.asarray(state[name], np.float32), dtype=dtype,
                                            device=device) for name in names})

    @property
    def device(self) -> Device:
        return self.weights["norm"].device

    def __call__(self, x: Tensor) -> list[Tensor]:
        """[N, 3, H, W] (0..255) -> the five side outputs, [N, 1, H / 2^i, W / 2^i] (sizes
        floored by each pool). torch: `ControlNetHED_Apache2.forward`."""
        h = x - self.weights["norm"]
        sides = []
        for block, layers in enumerate(_LAYERS, 1):
            if block > 1:
                h = max_pool2d(h, 2)
            for j in range(layers):
                h = gpustd.maximum(conv2d(h, self.weights[f"block{block}.convs.{j}.weight"],
                                          self.weights[f"block{block}.convs.{j}.bias"],
                                          padding=1), 0.0)
            sides.append(conv2d(h, self.weights[f"block{block}.projection.weight"],
                                self.weights[f"block{block}.projection.bias"]))
        return sides
