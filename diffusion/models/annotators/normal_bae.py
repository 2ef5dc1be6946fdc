"""The normal_bae annotator's network (Bae et al.'s surface normal estimator, scannet.pt) on
gpustd.

    model = NormalBae.from_state_dict(tensors, device=device)
    normals = model(x)                # [1, 3, H, W] (ImageNet-normalized) -> [1, 3, H, W]

An EfficientNet-B5 encoder (efficientnet.py), a U-shaped decoder of bilinear upsamplings
(corners aligned) and 3x3 convs with batch norm and leaky ReLU, a first prediction at 1/8 of
the picture, refined at 1/4, 1/2 and full size by per-pixel MLPs that read the decoder's
features beside the previous prediction upsampled. Each prediction is (x, y, z, kappa): the
unit normal and its confidence (ELU + 1.01). H and W must be multiples of 32. Keys:
`encoder.original_model.*`, `decoder.*`. torch: controlnet_aux.normalbae.nets.NNET (mode
"test": every pixel refined, no sampling).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

import gpustd
from gpucore import Device, default_device
from gpustd import Tensor
from gpustd.nn import concat, conv2d

from ..resample import bilinear_matrix, resample
from .batch_norm import folded, missing_keys
from .efficientnet import EfficientNetFeatures

__all__ = ["NormalBae"]

_ENCODER = "encoder.original_model."
_SKIPS = {1: 4, 2: 2, 3: 1, 4: 0}  # up{i} reads the output of encoder stage _SKIPS[i]
_REFINE = (("out_conv_res4", 2), ("out_conv_res2", 3), ("out_conv_res1", 4))


def _resized(x: Tensor, height: int, width: int) -> Tensor:
    """Bilinear with the corners aligned. torch: `F.interpolate(x, (height, width),
    mode="bilinear", align_corners=True)`."""
    h, w = x.shape[2:]
    if (h, w) == (height, width):
        return x
    return resample(x, bilinear_matrix(h, height, align_corners=True),
                    bilinear_matrix(w, width, align_corners=True))


def _normalized(x: Tensor) -> Tensor:
    """(x, y, z, kappa) -> the unit normal and ELU(kappa) + 1.01: the decoder's
    `norm_normalize`."""
    normal, kappa = x[:, 0:3], x[:, 3:4]
    length = gpustd.sqrt(gpustd.sum(normal * normal, axis=1, keepdims=True)) + 1e-10
    kappa = gpustd.maximum(kappa, 0.0) + gpustd.exp(gpustd.minimum(kappa, 0.0)) + 0.01
    return concat([normal / length, kappa], axis=1)


class NormalBae:
    """NNET with the "BN" decoder (the ControlNet annotator's)."""

    def __init__(self, encoder: EfficientNetFeatures,
                 weights: Mapping[str, tuple[Tensor, Tensor]]) -> None:
        self.encoder = encoder
        self.weights = dict(weights)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, dtype: Any = np.float32,
                        device: Device | None = None) -> NormalBae:
        """Build from the state dict's numpy arrays (scannet.pt's `model`, whose
        DataParallel `module.` prefix is dropped here too). ValueError naming a missing
        tensor."""
        device = device or default_device()
        state = {key.removeprefix("model.").removeprefix("module."): value
                 for key, value in state.items()}
        encoder = EfficientNetFeatures.from_state_dict(state, _ENCODER, dtype=dtype,
                                                       device=device)
        layers: dict[str, tuple[str, str | None]] = {
            "conv2": ("decoder.conv2", None), "out_conv_res8": ("decoder.out_conv_res8", None)}
        for i in _SKIPS:
            layers[f"up{i}.0"] = (f"decoder.up{i}._net.0", f"decoder.up{i}._net.1")
            layers[f"up{i}.1"] = (f"decoder.up{i}._net.3", f"decoder.up{i}._net.4")
        for name, _ in _REFINE:
            for j in (0, 2, 4, 6):
                layers[f"{name}.{j}"] = (f"decoder.{name}.{j}", None)
        weights = {}
        for name, (conv, norm) in layers.items():
            missing = missing_keys(state, conv, norm)
            if missing:
                raise ValueError(f"no tensor {missing[0]}: not a normal_bae network "
                                 "(scannet.pt)")
            weights[name] = folded(state, conv, norm, dtype=dtype, device=device)
        return cls(encoder, weights)

    @property
    def device(self) -> Device:
        return self.encoder.device

    def _conv(self, x: Tensor, name: str) -> Tensor:
        weight, bias = self.weights[name]
        return conv2d(x, weight, bias, padding=weight.shape[2] // 2)

    def _up(self, x: Tensor, skip: Tensor, i: int) -> Tensor:
        """UpSampleBN: x resized to the skip's size beside it, two 3x3 conv + BN + leaky
        ReLU (slope 0.01)."""
        h = concat([_resized(x, *skip.shape[2:]), skip], axis=1)
        for j in (0, 1):
            h = self._conv(h, f"up{i}.{j}")
            h = gpustd.maximum(h, h * 0.01)
        return h

    def _refine(self, features: Tensor, previous: Tensor, name: str) -> Tensor:
        """Features and the previous prediction upsampled 2x, through a per-pixel MLP."""
        height, width = 2 * previous.shape[2], 2 * previous.shape[3]
        h = concat([_resized(features, height, width), _resized(previous, height, width)],
                   axis=1)
        for j in (0, 2, 4):
            h = gpustd.maximum(self._conv(h, f"{name}.{j}"), 0.0)
        return _normalized(self._conv(h, f"{name}.6"))

    def __call__(self, x: Tensor) -> Tensor:
        """[N, 3, H, W] -> the unit normals [N, 3, H, W] (in -1..1). torch:
        `NNET(x)[0][-1][:, :3]`."""
        height, width = x.shape[2:]
        if height % 32 or width % 32:
            raise ValueError(f"normal_bae: {width}x{height} is not a multiple of 32 on each "
                             "side")
        *stages, head = self.encoder(x)
        decoded = [self._conv(head, "conv2")]
        for i, stage in _SKIPS.items():
            decoded.append(self._up(decoded[-1], stages[stage], i))
        prediction = _normalized(self._conv(decoded[2], "out_conv_res8"))
        for name, level in _REFINE:
            prediction = self._refine(decoded[level], prediction, name)
        return prediction[:, 0:3]
