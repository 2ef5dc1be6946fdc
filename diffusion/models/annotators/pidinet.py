"""The softedge_pidinet annotator's network (PiDiNet, "carv4" with CDCM and CSAM:
table5_pidinet.pth) on gpustd.

    model = PiDiNet.from_state_dict(tensors, device=device)
    edges = model(x)                  # [1, 3, H, W] in 0..1 (BGR) -> [1, 1, H, W] in 0..1

Pixel difference convolutions are plain convolutions with rewritten kernels (the paper's
conversion, done once here when the weights are read): central ("cd") subtracts the kernel's
sum at its centre, angular ("ad") subtracts each tap's clockwise neighbour, radial ("rd")
spreads a 3x3 kernel over a 5x5 ring. Four stages of depthwise-then-pointwise residual blocks
(60, 120, 240, 240 channels; a 2x2 max pool starts stages 2-4), each stage's features through
dilated convs (CDCM), a spatial attention (CSAM) and a 1x1 reduction to one channel, resized to
the picture (bilinear), fused by a 1x1 conv, sigmoid. torch: controlnet_aux.pidi.model.pidinet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

import gpustd
from gpucore import Device, default_device
from gpustd import Tensor
from gpustd.nn import concat, conv2d, max_pool2d

from ..resample import bilinear_matrix, resample

__all__ = ["PiDiNet", "plain_kernel"]

# "carv4": the pixel difference of each of the 16 layers (the init block, then the blocks)
_KINDS = ("cd", "ad", "rd", "cv") * 4
_BLOCKS = [f"block{stage}_{i}" for stage, count in ((1, 3), (2, 4), (3, 4), (4, 4))
           for i in range(1, count + 1)]
_ANGULAR = [3, 0, 1, 6, 4, 2, 7, 8, 5]  # each tap's clockwise neighbour in a 3x3 kernel
_RING_OUT, _RING_IN = [0, 2, 4, 10, 14, 20, 22, 24], [6, 7, 8, 11, 13, 16, 17, 18]


def plain_kernel(weight: np.ndarray, kind: str) -> np.ndarray:
    """The ordinary conv kernel a pixel difference conv of `kind` computes ([out, in, 3, 3],
    or [out, in, 5, 5] for "rd"). torch: pidinet's `createConvFunc(kind)` as one conv2d."""
    out, inner = weight.shape[:2]
    flat = weight.reshape(out, inner, 9).astype(np.float32)
    if kind == "cd":
        flat = flat.copy()
        flat[:, :, 4] -= flat.sum(axis=2)
    elif kind == "ad":
        flat = flat - flat[:, :, _ANGULAR]
    elif kind == "rd":
        ring = np.zeros((out, inner, 25), np.float32)
        ring[:, :, _RING_OUT], ring[:, :, _RING_IN] = flat[:, :, 1:], -flat[:, :, 1:]
        return ring.reshape(out, inner, 5, 5)
    return flat.reshape(weight.shape)


class PiDiNet:
    """PiDiNet carv4 with dilation 24 and attention (the ControlNet annotator's)."""

    def __init__(self, weights: Mapping[str, Tensor]) -> None:
        self.weights = dict(weights)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, dtype: Any = np.float32,
                        device: Device | None = None) -> PiDiNet:
        """Build from the state dict's numpy arrays (`module.` already dropped). ValueError
        naming a missing tensor."""
        device = device or default_device()
        convert = {"init_block.weight": _KINDS[0]}
        convert |= {f"{block}.conv1.weight": kind for block, kind in zip(_BLOCKS, _KINDS[1:])}
        names = [*convert, *(f"{block}.conv2.weight" for block in _BLOCKS),
                 "classifier.weight", "classifier.bias"]
        names += [f"block{stage}_1.shortcut.{kind}" for stage in (2, 3, 4)
                  for kind in ("weight", "bias")]
        for i in range(4):
            names += [f"dilations.{i}.conv1.weight", f"dilations.{i}.conv1.bias",
                      *(f"dilations.{i}.conv2_{j}.weight" for j in range(1, 5)),
                      f"attentions.{i}.conv1.weight", f"attentions.{i}.conv1.bias",
                      f"attentions.{i}.conv2.weight",
                      f"conv_reduces.{i}.conv.weight", f"conv_reduces.{i}.conv.bias"]
        missing = [name for name in names if name not in state]
        if missing:
            raise ValueError(f"no tensor {missing[0]}: not a PiDiNet network "
                             "(table5_pidinet.pth)")
        weights = {}
        for name in names:
            value = np.asarray(state[name], np.float32)
            if name in convert:
                value = plain_kernel(value, convert[name])
            weights[name] = Tensor.from_numpy(value, dtype=dtype, device=device)
        return cls(weights)

    @property
    def device(self) -> Device:
        return self.weights["init_block.weight"].device

    def _conv(self, x: Tensor, name: str, *, bias: bool = False, **geometry: Any) -> Tensor:
        return conv2d(x, self.weights[f"{name}.weight"],
                      self.weights[f"{name}.bias"] if bias else None, **geometry)

    def _block(self, x: Tensor, block: str) -> Tensor:
        pooled = block[-2:] == "_1" and block != "block1_1"
        if pooled:
            x = max_pool2d(x, 2)
        weight = self.weights[f"{block}.conv1.weight"]
        y = conv2d(x, weight, padding=weight.shape[2] // 2, groups=weight.shape[0])
        y = self._conv(gpustd.maximum(y, 0.0), f"{block}.conv2")
        return y + (self._conv(x, f"{block}.shortcut", bias=True) if pooled else x)

    def _side(self, x: Tensor, i: int) -> Tensor:
        """One stage's edge logits: CDCM, CSAM, the 1x1 reduction."""
        x = self._conv(gpustd.maximum(x, 0.0), f"dilations.{i}.conv1", bias=True)
        parts = [self._conv(x, f"dilations.{i}.conv2_{j}", padding=d, dilation=d)
                 for j, d in zip(range(1, 5), (5, 7, 9, 11))]
        x = parts[0] + parts[1] + parts[2] + parts[3]
        attention = self._conv(gpustd.maximum(x, 0.0), f"attentions.{i}.conv1", bias=True)
        attention = gpustd.sigmoid(self._conv(attention, f"attentions.{i}.conv2", padding=1))
        return self._conv(x * attention, f"conv_reduces.{i}.conv", bias=True)

    def __call__(self, x: Tensor) -> Tensor:
        """[N, 3, H, W] (BGR, 0..1) -> the fused edge map [N, 1, H, W] in 0..1. torch: the
        last of `PiDiNet.forward`'s outputs."""
        height, width = x.shape[2:]
        # 1. the init conv and the four stages of blocks
        h = self._conv(x, "init_block", padding=self.weights["init_block.weight"].shape[2] // 2)
        stages = []
        for stage in range(1, 5):
            for block in (b for b in _BLOCKS if b.startswith(f"block{stage}_")):
                h = self._block(h, block)
            stages.append(h)
        # 2. each stage's edges at the picture's size, fused
        sides = []
        for i, features in enumerate(stages):
            side = self._side(features, i)
            h_i, w_i = side.shape[2:]
            if (h_i, w_i) != (height, width):
                side = resample(side, bilinear_matrix(h_i, height, align_corners=False),
                                bilinear_matrix(w_i, width, align_corners=False))
            sides.append(side)
        return gpustd.sigmoid(self._conv(concat(sides, axis=1), "classifier", bias=True))
