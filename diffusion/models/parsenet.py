"""facexlib's face parsing net (ParseNet, from PSFRGAN) on gpustd: 19 face-part classes per
pixel of an aligned face, from which face restoration makes its paste-back mask.

    parser = ParseNet.from_state_dict(tensors, device=device)   # parsing_parsenet.pth
    logits = parser(x)           # x: [1, 3, 512, 512] RGB in -1..1 -> [1, 19, 512, 512]

Keys: `encoder.0.conv2d`, then residual blocks `{encoder,body,decoder}.{i}` with `conv1` and
`conv2` (`.conv2d` and BatchNorm `.norm.norm`) and, where the size or width changes, a
`shortcut_func.conv2d`; `out_mask_conv.conv2d` (`out_img_conv` is not needed). Every conv reads
its input reflect-padded by one. torch: `facexlib.parsing.ParseNet` (its first output).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

import gpustd
from gpucore import Device, default_device
from gpustd import Tensor
from gpustd.nn import conv2d, upsample_nearest2x

from .esrgan import leaky_relu
from .retinaface import _fold

__all__ = ["ParseNet", "reflect_pad1"]


def reflect_pad1(x: Tensor) -> Tensor:
    """[N, C, H, W] -> [N, C, H+2, W+2], the border mirrored without repeating the edge.
    torch: `F.pad(x, (1, 1, 1, 1), mode="reflect")`."""
    h, w = x.shape[2:]
    x = gpustd.concatenate([x[:, :, :, 1:2], x, x[:, :, :, w - 2:w - 1]], axis=3)
    return gpustd.concatenate([x[:, :, 1:2], x, x[:, :, h - 2:h - 1]], axis=2)


class ParseNet:
    """ParseNet with weights on `device` (the module docstring says which keys)."""

    def __init__(self, weights: Mapping[str, Tensor], *, encoder: list[str], body: int,
                 decoder: int) -> None:
        self.weights = dict(weights)
        self.encoder, self.body, self.decoder = encoder, body, decoder

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, device: Device | None = None
                        ) -> ParseNet:
        """Build from a state dict of numpy arrays (BatchNorms folded into their convs).
        Raises ValueError when it is no ParseNet."""
        device = device or default_device()
        if "out_mask_conv.conv2d.weight" not in state:
            raise ValueError("not a ParseNet state dict (no 'out_mask_conv.conv2d.weight')")
        weights: dict[str, Tensor] = {}
        for key in state:
            if not key.endswith("conv2d.weight"):
                continue
            conv = key.removesuffix(".weight")
            bn = conv.removesuffix(".conv2d") + ".norm.norm"
            if f"{bn}.running_var" in state:
                weight, bias = _fold(state, conv, bn)
            else:
                weight, bias = state[key], state[f"{conv}.bias"]
            weights[f"{conv}.weight"] = Tensor.from_numpy(np.asarray(weight, np.float32),
                                                          device=device)
            weights[f"{conv}.bias"] = Tensor.from_numpy(np.asarray(bias, np.float32),
                                                        device=device)

        def count(part: str) -> int:
            return len({key.split(".")[1] for key in state if key.startswith(f"{part}.")})

        return cls(weights, encoder=[str(i) for i in range(count("encoder"))],
                   body=count("body"), decoder=count("decoder"))

    def _conv(self, name: str, x: Tensor, *, stride: int = 1, up: bool = False,
              relu: bool = False) -> Tensor:
        if up:
            x = upsample_nearest2x(x)
        out = conv2d(reflect_pad1(x), self.weights[f"{name}.conv2d.weight"],
                     self.weights[f"{name}.conv2d.bias"], stride=stride)
        return leaky_relu(out) if relu else out

    def _block(self, name: str, x: Tensor, scale: str) -> Tensor:
        stride, up = (2, False) if scale == "down" else (1, scale == "up")
        skip = x
        if f"{name}.shortcut_func.conv2d.weight" in self.weights:
            skip = self._conv(f"{name}.shortcut_func", x, stride=stride, up=up)
        out = self._conv(f"{name}.conv1", x, up=up, relu=True)
        return self._conv(f"{name}.conv2", out, stride=stride) + skip

    def __call__(self, x: Tensor) -> Tensor:
        """[1, 3, S, S] RGB in -1..1 -> [1, 19, S, S] class logits. torch: `ParseNet(x)[0]`."""
        feat = self._conv("encoder.0", x)
        for i in range(1, len(self.encoder)):
            feat = self._block(f"encoder.{i}", feat, "down")
        h = feat
        for i in range(self.body):
            h = self._block(f"body.{i}", h, "none")
        h = feat + h
        for i in range(self.decoder):
            h = self._block(f"decoder.{i}", h, "up")
        return self._conv("out_mask_conv", h)
