"""The ResNet-50 stem of ViT-hybrid models (timm's `vit_base_resnet50_384`: a BiT ResNet-v2
without pre-activation, three stages) on gpustd: the backbone of MiDaS's DPT-Hybrid.

    backbone = BitResNet(widths, depths, place)    # attribute paths = timm's keys
    stages = backbone(x)                           # each stage's output, [N, C_i, H/4 ... /16]

Every conv is weight-standardized (BiT's StdConv2d: each output channel's weights minus their
mean over their standard deviation, eps 1e-8; done once, on the host, by `standardized`) and
padded as TensorFlow's "same" (timm's StdConv2dSame: the odd row and column of a strided conv at
the bottom and right), each followed by a GroupNorm of 32 groups (eps 1e-5) and a ReLU, as
timm's GroupNormAct. The stem is a 7x7 conv at stride 2 and a 3x3 max pool at stride 2 ("same"
too); stage i's first block strides by 1, 2, 2 and projects its shortcut. torch:
`timm.models.resnetv2.ResNetV2(layers=(3, 4, 9), preact=False, stem_type="same",
conv_layer=partial(StdConv2dSame, eps=1e-8))`, transformers' BitBackbone (layer_type
"bottleneck", global_padding "same").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from gpustd import Tensor, maximum, nn
from gpustd.nn import conv2d, pad

from ..layers import Place

__all__ = ["BitResNet", "same_padded", "standardized"]

GROUPS, NORM_EPS, STD_EPS = 32, 1e-5, 1e-8


def same_padded(x: Tensor, kernel: int, stride: int) -> tuple[Tensor, int]:
    """TensorFlow's "same" padding of a kernel x kernel window at `stride`: (x padded, the
    symmetric padding left to the conv). Stride 1 pads evenly; a strided window's extra row
    and column go to the bottom and right (timm's pad_same)."""
    if stride == 1:
        return x, (kernel - 1) // 2
    rows, cols = (max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
                  for size in x.shape[2:])
    if rows == cols == 0:
        return x, 0
    return pad(x, (cols // 2, cols - cols // 2, rows // 2, rows - rows // 2)), 0


def standardized(weight: np.ndarray) -> np.ndarray:
    """BiT's weight standardization, in float64: each output channel's weights less their mean,
    over the square root of their (biased) variance + 1e-8. torch: `F.batch_norm(w.reshape(1,
    out, -1), None, None, training=True, eps=1e-8).reshape_as(w)`."""
    flat = np.asarray(weight, np.float64).reshape(weight.shape[0], -1)
    mean = flat.mean(axis=1, keepdims=True)
    variance = ((flat - mean) ** 2).mean(axis=1, keepdims=True)
    return ((flat - mean) / np.sqrt(variance + STD_EPS)).reshape(weight.shape).astype(np.float32)


class _StdConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, place: Place) -> None:
        self.stride = stride
        self.weight = nn.parameter((cout, cin, kernel, kernel), place["dtype"], place["device"])

    def forward(self, x: Tensor) -> Tensor:
        framed, padding = same_padded(x, self.weight.shape[2], self.stride)
        return conv2d(framed, self.weight, None, stride=self.stride, padding=padding)


def _norm(channels: int, place: Place) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPS, channels, eps=NORM_EPS, **place)


def _relu(x: Tensor) -> Tensor:
    return maximum(x, 0.0)


class _Bottleneck(nn.Module):
    """1x1 down to a quarter of the width, 3x3 (strided), 1x1 up, each normed; ReLU of the sum
    with the shortcut (a strided 1x1 conv + norm in a stage's first block)."""

    def __init__(self, cin: int, cout: int, stride: int, first: bool, place: Place) -> None:
        mid = cout // 4
        if first:
            self.downsample = nn.Namespace()
            self.downsample.conv = _StdConv(cin, cout, 1, stride, place)
            self.downsample.norm = _norm(cout, place)
        self.conv1, self.norm1 = _StdConv(cin, mid, 1, 1, place), _norm(mid, place)
        self.conv2, self.norm2 = _StdConv(mid, mid, 3, stride, place), _norm(mid, place)
        self.conv3, self.norm3 = _StdConv(mid, cout, 1, 1, place), _norm(cout, place)

    def forward(self, x: Tensor) -> Tensor:
        down = getattr(self, "downsample", None)
        shortcut = x if down is None else down.norm(down.conv(x))
        h = _relu(self.norm1(self.conv1(x)))
        h = _relu(self.norm2(self.conv2(h)))
        return _relu(self.norm3(self.conv3(h)) + shortcut)


class BitResNet(nn.Module):
    """The stem (`stem.conv`, `stem.norm`) and `stages.{i}.blocks.{j}`; `widths`: the stem's
    channels then each stage's (64, 256, 512, 1024 in ViT-B/R50), `depths` each stage's
    blocks (3, 4, 9)."""

    def __init__(self, widths: tuple[int, ...], depths: tuple[int, ...], place: Place) -> None:
        self.stem = nn.Namespace()
        self.stem.conv = _StdConv(3, widths[0], 7, 2, place)
        self.stem.norm = _norm(widths[0], place)
        stages = []
        for index, depth in enumerate(depths):
            stage = nn.Namespace()
            cin, cout = widths[index], widths[index + 1]
            stride = 2 if index else 1
            stage.blocks = nn.ModuleList([
                _Bottleneck(cin, cout, stride, True, place),
                *(_Bottleneck(cout, cout, 1, False, place) for _ in range(depth - 1))])
            stages.append(stage)
        self.stages = nn.ModuleList(stages)

    @staticmethod
    def shapes(state: Mapping[str, Any], prefix: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(widths, depths) of the backbone whose tensors are under `prefix` in `state`.
        ValueError if there is none."""
        stem = f"{prefix}stem.conv.weight"
        if stem not in state:
            raise ValueError(f"no tensor {stem}")
        widths: list[int] = [int(state[stem].shape[0])]
        depths: list[int] = []
        while f"{prefix}stages.{len(depths)}.blocks.0.conv3.weight" in state:
            at = f"{prefix}stages.{len(depths)}.blocks."
            widths.append(int(state[f"{at}0.conv3.weight"].shape[0]))
            depths.append(len({key[len(at):].split(".")[0] for key in state
                               if key.startswith(at)}))
        return tuple(widths), tuple(depths)

    def forward(self, x: Tensor) -> list[Tensor]:
        """[N, 3, H, W] -> each stage's output (strides 4, 8, 16)."""
        h = _relu(self.stem.norm(self.stem.conv(x)))
        # the max pool reads post-ReLU values: zeros pad it as timm's -inf does
        framed, _ = same_padded(h, 3, 2)
        rows, cols = (framed.shape[2] - 3) // 2 + 1, (framed.shape[3] - 3) // 2 + 1
        pooled = None
        for dy in range(3):
            for dx in range(3):
                window = framed[:, :, dy:dy + 2 * rows - 1:2, dx:dx + 2 * cols - 1:2]
                pooled = window if pooled is None else maximum(pooled, window)
        assert pooled is not None
        h, outputs = pooled, []
        for stage in self.stages:
            for block in stage.blocks:
                h = block(h)
            outputs.append(h)
        return outputs
