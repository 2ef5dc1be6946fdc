"""EfficientNet's feature extractor as TensorFlow's ports run it (geffnet's `tf_efficientnet_*`:
"same" padding, batch norm eps 1e-3), on gpustd: the encoder of the normal_bae annotator
(tf_efficientnet_b5_ap).

    encoder = EfficientNetFeatures.from_state_dict(tensors, prefix, device=device)
    outputs = encoder(x)              # each stage's output, then conv_head's (no norm after)

The stem, then seven stages of blocks (depthwise-separable, then inverted residuals with
squeeze-and-excitation, swish activations), each stage's first block halving the picture
where EfficientNet's definition says so; the number of blocks and their widths and kernels are
read from the keys (`blocks.{stage}.{block}.conv_dw` ...). torch: geffnet.GenEfficientNet.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

import gpustd
from gpucore import Device, default_device
from gpustd import Tensor
from gpustd.nn import conv2d, pad, silu

from .batch_norm import folded, missing_keys

__all__ = ["EfficientNetFeatures"]

_STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # EfficientNet's arch_def, every size
_EPS = 1e-3  # TensorFlow's batch norm


def _same(x: Tensor, kernel: int, stride: int) -> tuple[Tensor, int]:
    """TensorFlow's "same" padding: (x padded, conv padding). Odd kernels at stride 1 pad
    evenly; stride 2 pads the extra row and column at the bottom and right."""
    if stride == 1:
        return x, (kernel - 1) // 2
    pads = [max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            for size in x.shape[2:]]
    return pad(x, (pads[1] // 2, pads[1] - pads[1] // 2, pads[0] // 2,
                   pads[0] - pads[0] // 2)), 0


class EfficientNetFeatures:
    """geffnet's GenEfficientNet up to conv_head, returning every stage's output."""

    def __init__(self, weights: Mapping[str, tuple[Tensor, Tensor]],
                 blocks: list[tuple[str, int, int, bool]]) -> None:
        self.weights = dict(weights)
        self.blocks = blocks  # (key prefix, stage, stride, inverted residual) per block

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], prefix: str = "", *,
                        dtype: Any = np.float32,
                        device: Device | None = None) -> EfficientNetFeatures:
        """Build from the state dict's numpy arrays under `prefix` (e.g.
        "encoder.original_model."). ValueError naming a missing tensor."""
        device = device or default_device()
        layers: dict[str, tuple[str, str | None]] = {
            "conv_stem": (f"{prefix}conv_stem", f"{prefix}bn1"),
            "conv_head": (f"{prefix}conv_head", None)}
        blocks = []
        pattern = re.compile(re.escape(prefix) + r"blocks\.(\d+)\.(\d+)\.")
        found = {(int(m[1]), int(m[2])) for key in state if (m := pattern.match(key))}
        for stage, stride in enumerate(_STAGE_STRIDES):
            for index in range(len({b for s, b in found if s == stage})):
                at = f"{prefix}blocks.{stage}.{index}"
                inverted = f"{at}.conv_pwl.weight" in state
                blocks.append((at, stage, stride if index == 0 else 1, inverted))
                convs = ({"conv_pw": "bn1", "conv_dw": "bn2", "conv_pwl": "bn3"} if inverted
                         else {"conv_dw": "bn1", "conv_pw": "bn2"})
                for conv, batch_norm in convs.items():
                    layers[f"{at}.{conv}"] = (f"{at}.{conv}", f"{at}.{batch_norm}")
                for conv in ("se.conv_reduce", "se.conv_expand"):
                    layers[f"{at}.{conv}"] = (f"{at}.{conv}", None)
        if not blocks:
            raise ValueError(f"no tensor {prefix}blocks.0.0.conv_dw.weight: not an "
                             "EfficientNet")
        weights = {}
        for name, (conv, norm) in layers.items():
            missing = missing_keys(state, conv, norm)
            if missing:
                raise ValueError(f"no tensor {missing[0]}: not a TensorFlow-style EfficientNet "
                                 "(geffnet's tf_efficientnet)")
            weights[name] = folded(state, conv, norm, eps=_EPS, dtype=dtype, device=device)
        return cls(weights, blocks)

    @property
    def device(self) -> Device:
        return self.weights["conv_stem"][0].device

    def _conv(self, x: Tensor, name: str, *, stride: int = 1, act: bool = True) -> Tensor:
        weight, bias = self.weights[name]
        kernel = weight.shape[2]
        framed, padding = _same(x, kernel, stride) if kernel > 1 else (x, 0)
        groups = x.shape[1] if weight.shape[1] == 1 and x.shape[1] > 1 else 1
        y = conv2d(framed, weight, bias, stride=stride, padding=padding, groups=groups)
        return silu(y) if act else y

    def _excite(self, x: Tensor, at: str) -> Tensor:
        """Squeeze-and-excitation: each channel scaled by a gate of the channels' means."""
        squeezed = gpustd.mean(x, axis=(2, 3), keepdims=True)
        gate = self._conv(self._conv(squeezed, f"{at}.se.conv_reduce"),
                          f"{at}.se.conv_expand", act=False)
        return x * gpustd.sigmoid(gate)

    def __call__(self, x: Tensor) -> list[Tensor]:
        """[N, 3, H, W] (ImageNet-normalized) -> the seven stages' outputs and conv_head's.
        torch: the features the normal_bae Encoder collects at blocks.0 ... conv_head."""
        h = self._conv(x, "conv_stem", stride=2)
        stages: dict[int, Tensor] = {}
        for at, stage, stride, inverted in self.blocks:
            y = self._conv(h, f"{at}.conv_pw") if inverted else h
            y = self._excite(self._conv(y, f"{at}.conv_dw", stride=stride), at)
            y = self._conv(y, f"{at}.conv_pwl" if inverted else f"{at}.conv_pw", act=False)
            h = stages[stage] = h + y if stride == 1 and y.shape == h.shape else y
        return [*stages.values(), self._conv(h, "conv_head", act=False)]
