"""The mlsd annotator's network (M-LSD large: MobileNetV2 with a U-shaped decoder,
mlsd_large_512_fp32.pth) on gpustd.

    model = MobileLineSegmentDetector.from_state_dict(tensors, device=device)
    maps = model(x)                   # [1, 4, H, W] in -1..1 -> [1, 5, H / 2, W / 2]

The output's channels: the line centres' logits, then each centre's displacements to its
segment's start (x, y) and end (x, y), in half-resolution pixels (the model's channels 7..11;
the others, for junctions, are not computed). Batch norms are folded into the convs when the
weights are read. H and W must be multiples of 16. Keys as torch's modules:
`backbone.features.{i}` (MobileNetV2's first 14 layers), `block15`..`block23`.
torch: controlnet_aux.mlsd.models.mbv2_mlsd_large.MobileV2_MLSD_Large.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

import gpustd
from gpucore import Device, default_device
from gpustd import Tensor
from gpustd.nn import concat, conv2d, pad

from ..resample import bilinear_matrix, resample
from .batch_norm import folded, missing_keys

__all__ = ["MobileLineSegmentDetector"]

_STRIDE_TWO = (0, 2, 4, 7)  # the backbone layers that halve the picture
_FEATURES = (1, 3, 6, 10, 13)  # the layers whose outputs the decoder reads
_OUTPUT = slice(7, 12)  # centre logit and displacements among block23's 16 channels


def _layer_names() -> dict[str, tuple[str, str | None]]:
    """Each conv of the network (by the name it has here) -> its (conv, batch norm) keys."""
    names: dict[str, tuple[str, str | None]] = {
        "features.0": ("backbone.features.0.0", "backbone.features.0.1")}
    for i in range(1, 14):
        at = f"backbone.features.{i}.conv"
        convs = ["expand", "depthwise"] if i > 1 else ["depthwise"]
        for j, kind in enumerate(convs):
            names[f"features.{i}.{kind}"] = (f"{at}.{j}.0", f"{at}.{j}.1")
        names[f"features.{i}.project"] = (f"{at}.{len(convs)}", f"{at}.{len(convs) + 1}")
    for block in (15, 16, 17, 18, 19, 20, 21, 22, 23):
        for conv in ("conv1", "conv2"):
            names[f"block{block}.{conv}"] = (f"block{block}.{conv}.0", f"block{block}.{conv}.1")
    names["block23.conv3"] = ("block23.conv3", None)
    return names


class MobileLineSegmentDetector:
    """M-LSD large (the ControlNet annotator's)."""

    def __init__(self, weights: Mapping[str, tuple[Tensor, Tensor]]) -> None:
        self.weights = dict(weights)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, dtype: Any = np.float32,
                        device: Device | None = None) -> MobileLineSegmentDetector:
        """Build from the state dict's numpy arrays. ValueError naming a missing tensor."""
        device = device or default_device()
        weights: dict[str, tuple[Tensor, Tensor]] = {}
        for name, (conv, norm) in _layer_names().items():
            missing = missing_keys(state, conv, norm)
            if missing:
                raise ValueError(f"no tensor {missing[0]}: not an M-LSD large network "
                                 "(mlsd_large_512_fp32.pth)")
            rows = _OUTPUT if name == "block23.conv3" else slice(None)
            weights[name] = folded(state, conv, norm, rows=rows, dtype=dtype, device=device)
        return cls(weights)

    @property
    def device(self) -> Device:
        return self.weights["features.0"][0].device

    def _conv(self, x: Tensor, name: str, *, stride: int = 1, dilation: int = 1,
              relu: float | None = None) -> Tensor:
        """conv (+ folded norm), then ReLU capped at `relu` (inf: plain ReLU). Stride 2 pads
        only the bottom and right (the TF-style "same" of MobileNetV2's port)."""
        weight, bias = self.weights[name]
        groups = x.shape[1] if weight.shape[1] == 1 and x.shape[1] > 1 else 1
        if stride == 2:
            x, padding = pad(x, (0, 1, 0, 1)), 0
        else:
            padding = dilation * (weight.shape[2] // 2)
        y = conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation,
                   groups=groups)
        return y if relu is None else gpustd.clip(y, 0.0, relu)

    def _backbone(self, x: Tensor) -> list[Tensor]:
        x = self._conv(x, "features.0", stride=2, relu=6.0)
        features = []
        for i in range(1, 14):
            stride = 2 if i in _STRIDE_TWO else 1
            y = self._conv(x, f"features.{i}.expand", relu=6.0) if i > 1 else x
            y = self._conv(y, f"features.{i}.depthwise", stride=stride, relu=6.0)
            y = self._conv(y, f"features.{i}.project")
            x = x + y if stride == 1 and x.shape == y.shape else y
            if i in _FEATURES:
                features.append(x)
        return features

    def _merge(self, skip: Tensor, x: Tensor, block: int, upscale: bool) -> Tensor:
        """BlockTypeA: both sides through 1x1 convs, x upsampled 2x (bilinear, corners
        aligned), side by side."""
        x = self._conv(x, f"block{block}.conv1", relu=np.inf)
        if upscale:
            h, w = x.shape[2:]
            x = resample(x, bilinear_matrix(h, 2 * h, align_corners=True),
                         bilinear_matrix(w, 2 * w, align_corners=True))
        return concat([self._conv(skip, f"block{block}.conv2", relu=np.inf), x], axis=1)

    def _refine(self, x: Tensor, block: int) -> Tensor:
        """BlockTypeB: a residual 3x3 conv, then a 3x3 conv to 64 channels."""
        x = self._conv(x, f"block{block}.conv1", relu=np.inf) + x
        return self._conv(x, f"block{block}.conv2", relu=np.inf)

    def __call__(self, x: Tensor) -> Tensor:
        """[1, 4, H, W] (the picture and a plane of ones, in -1..1) -> [1, 5, H/2, W/2].
        torch: `MobileV2_MLSD_Large.forward(x)[:, 7:12]`."""
        height, width = x.shape[2:]
        if height % 16 or width % 16:
            raise ValueError(f"M-LSD: {width}x{height} is not a multiple of 16 on each side")
        c1, c2, c3, c4, c5 = self._backbone(x)
        h = self._refine(self._merge(c4, c5, 15, upscale=False), 16)
        for skip, block in ((c3, 17), (c2, 19), (c1, 21)):
            h = self._refine(self._merge(skip, h, block, upscale=True), block + 1)
        h = self._conv(h, "block23.conv1", dilation=5, relu=np.inf)
        h = self._conv(h, "block23.conv2", relu=np.inf)
        return self._conv(h, "block23.conv3")
