"""The lineart annotators' generator (informative-drawings' `Generator(3, 1, 3)`: sk_model.pth
for lineart_realistic, sk_model2.pth for lineart_coarse) on gpustd.

    model = LineartGenerator.from_state_dict(tensors, device=device)
    lines = model(x)                  # [1, 3, H, W] in 0..1 -> [1, 1, H', W'] in 0..1

A 7x7 conv, two stride-2 convs, residual blocks, two stride-2 transposed convs and a 7x7 conv
to one channel with a sigmoid; reflection padding and InstanceNorm (no affine) between. H' is
H rounded up to a multiple of 4. Keys: `model0.1`, `model1.{0,3}`, `model2.{i}.conv_block.{1,5}`,
`model3.{0,3}`, `model4.1`. torch: controlnet_aux.lineart.Generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

import gpustd
from gpucore import Device, default_device
from gpustd import Tensor
from gpustd.nn import conv2d, conv_transpose2d, group_norm, pad

__all__ = ["LineartGenerator", "instance_norm"]


def instance_norm(x: Tensor, *, relu: bool) -> Tensor:
    """Each channel of each picture normalized over its pixels (eps 1e-5), then ReLU if
    asked. torch: `nn.InstanceNorm2d(C)` (affine=False)."""
    out = group_norm(x, x.shape[1])
    return gpustd.maximum(out, 0.0) if relu else out


class LineartGenerator:
    """informative-drawings' generator with `blocks` residual blocks (3 in the annotators)."""

    def __init__(self, weights: Mapping[str, Tensor], *, blocks: int) -> None:
        self.weights = dict(weights)
        self.blocks = blocks

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, dtype: Any = np.float32,
                        device: Device | None = None) -> LineartGenerator:
        """Build from the state dict's numpy arrays. ValueError naming a missing tensor."""
        device = device or default_device()
        blocks = len({key.split(".")[1] for key in state if key.startswith("model2.")})
        names = ["model0.1", "model1.0", "model1.3", "model3.0", "model3.3", "model4.1"]
        names += [f"model2.{i}.conv_block.{j}" for i in range(blocks) for j in (1, 5)]
        weights = {}
        for name in names:
            for kind in ("weight", "bias"):
                if f"{name}.{kind}" not in state:
                    raise ValueError(f"no tensor {name}.{kind}: not a lineart generator "
                                     "(sk_model.pth / sk_model2.pth)")
                value = np.asarray(state[f"{name}.{kind}"], np.float32)
                weights[f"{name}.{kind}"] = Tensor.from_numpy(value, dtype=dtype, device=device)
        return cls(weights, blocks=blocks)

    @property
    def device(self) -> Device:
        return self.weights["model0.1.weight"].device

    def _conv(self, x: Tensor, name: str, *, stride: int = 1, padding: int = 0) -> Tensor:
        return conv2d(x, self.weights[f"{name}.weight"], self.weights[f"{name}.bias"],
                      stride=stride, padding=padding)

    def __call__(self, x: Tensor) -> Tensor:
        """[N, 3, H, W] (0..1) -> [N, 1, H', W'] (0..1). torch: `Generator.forward`."""
        # 1. a 7x7 conv on the reflected picture, then two stride-2 downsamplings
        h = instance_norm(self._conv(pad(x, (3, 3, 3, 3), mode="reflect"), "model0.1"),
                          relu=True)
        for name in ("model1.0", "model1.3"):
            h = instance_norm(self._conv(h, name, stride=2, padding=1), relu=True)
        # 2. residual blocks of two reflected 3x3 convs
        for i in range(self.blocks):
            block = f"model2.{i}.conv_block"
            r = instance_norm(self._conv(pad(h, (1, 1, 1, 1), mode="reflect"), f"{block}.1"),
                              relu=True)
            r = instance_norm(self._conv(pad(r, (1, 1, 1, 1), mode="reflect"), f"{block}.5"),
                              relu=False)
            h = h + r
        # 3. two exact 2x transposed-conv upsamplings, a 7x7 conv to one channel, sigmoid
        for name in ("model3.0", "model3.3"):
            h = conv_transpose2d(h, self.weights[f"{name}.weight"], self.weights[f"{name}.bias"],
                                 stride=2, padding=1, output_padding=1)
            h = instance_norm(h, relu=True)
        return gpustd.sigmoid(self._conv(pad(h, (3, 3, 3, 3), mode="reflect"), "model4.1"))
