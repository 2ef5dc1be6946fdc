"""ESRGAN's RRDBNet on gpustd: ESRGAN, BSRGAN/RealSR and Real-ESRGAN (x4plus, x4plus_anime_6B,
x2plus) upscalers, from either key layout, at scales 1, 2, 4 and 8.

    model = RRDBNet.from_state_dict(tensors, device=device)   # {key: numpy array}
    out = model(x)                    # x: [1, 3, H, W] float in 0..1 -> [1, 3, H*s, W*s]

Layouts (spandrel's `ESRGAN` architecture reads the same three):
- old (ESRGAN): `model.0` conv, `model.1.sub.{i}.RDB{1,2,3}.conv{1..5}.0` blocks, `model.1.sub.NB`
  trunk conv, then `model.{3,6,..}` upsampling convs, HR conv and last conv;
- new (Real-ESRGAN/BasicSR): `conv_first`, `body.{i}.rdb{j}.conv{k}`, `conv_body`, `conv_up{n}`,
  `conv_hr`, `conv_last`; BSRGAN's `RRDB_trunk.*`, `trunk_conv`, `upconv{n}`, `HRconv` likewise.
Real-ESRGAN's x2 and x1 models pixel-unshuffle their input first (`in_nc` = 4x or 16x `out_nc`)
and upsample x4 inside. torch: `spandrel.ModelLoader().load_from_state_dict(sd).model`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

import gpustd
from gpucore import Device, default_device
from gpustd import Tensor
from gpustd.nn import conv2d, upsample_nearest2x
from gpustd.shape import put_slice

__all__ = ["RRDBNet", "leaky_relu", "to_old_layout"]

_NEW = [  # new-layout key pattern -> old-layout name (\1.. are the pattern's groups)
    (r"(?:conv_first)\.(weight|bias)", r"model.0.\1"),
    (r"(?:body|RRDB_trunk)\.(\d+)\.(?:rdb|RDB)(\d)\.conv(\d)\.(weight|bias)",
     r"model.1.sub.\1.RDB\2.conv\3.0.\4"),
]


def leaky_relu(x: Tensor, slope: float = 0.2) -> Tensor:
    """max(x, slope * x) for 0 < slope < 1. torch: `F.leaky_relu(x, slope)`."""
    return gpustd.maximum(x, x * slope)


def to_old_layout(state: Mapping[str, Any]) -> dict[str, Any]:
    """A state dict in ESRGAN's old key layout, whichever layout `state` uses (see the module
    docstring); values are passed through. Raises ValueError when it is no RRDBNet."""
    if "model.0.weight" in state:
        return dict(state)
    if "conv_first.weight" not in state:
        raise ValueError("not an ESRGAN/RRDBNet state dict (no 'model.0.weight' or "
                         "'conv_first.weight')")
    old: dict[str, Any] = {}
    blocks = 0
    for key, value in state.items():
        for pattern, target in _NEW:
            if re.fullmatch(pattern, key):
                old[re.sub(pattern, target, key)] = value
                if target.startswith("model.1."):
                    blocks = max(blocks, int(key.split(".")[1]) + 1)
    upconvs = sorted({int(m[2]) for key in state
                      if (m := re.fullmatch(r"(upconv|conv_up)(\d)\.(weight|bias)", key))})
    for kind in ("weight", "bias"):
        for trunk in ("conv_body", "trunk_conv"):
            if f"{trunk}.{kind}" in state:
                old[f"model.1.sub.{blocks}.{kind}"] = state[f"{trunk}.{kind}"]
        for n in upconvs:
            prefix = "conv_up" if f"conv_up{n}.{kind}" in state else "upconv"
            old[f"model.{3 * n}.{kind}"] = state[f"{prefix}{n}.{kind}"]
        last_up = 3 * (upconvs[-1] if upconvs else 0)
        for hr in ("conv_hr", "HRconv"):
            if f"{hr}.{kind}" in state:
                old[f"model.{last_up + 2}.{kind}"] = state[f"{hr}.{kind}"]
        old[f"model.{last_up + 4}.{kind}"] = state[f"conv_last.{kind}"]
    return old


class RRDBNet:
    """ESRGAN's network (old-arch names; see `to_old_layout`), weights on `device`.

    in_nc/out_nc: image channels (in_nc 4x or 16x out_nc: Real-ESRGAN's pixel-unshuffled
    x2 / x1 models); num_blocks RRDB blocks of num_filters features; `scale` the factor the
    whole network upsamples by (1, 2, 4 or 8).
    """

    def __init__(self, weights: Mapping[str, Tensor], *, in_nc: int, out_nc: int,
                 num_blocks: int, upconvs: int, shuffle_factor: int) -> None:
        self.weights = dict(weights)
        self.in_nc, self.out_nc, self.num_blocks = in_nc, out_nc, num_blocks
        self.upconvs, self.shuffle_factor = upconvs, shuffle_factor
        self.scale = 2 ** upconvs // shuffle_factor

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, dtype: Any = np.float32,
                        device: Device | None = None) -> RRDBNet:
        """Build from a state dict of numpy arrays in either layout. Raises ValueError naming
        what does not fit (a missing key, ESRGAN+'s extra 1x1 convs, a scale of 3)."""
        device = device or default_device()
        old = to_old_layout(state)
        if any(".conv1x1." in key for key in old):
            raise ValueError("ESRGAN+ models (RDB conv1x1 weights) are not supported")
        top = sorted({int(key.split(".")[1]) for key in old if key.startswith("model.")})
        # model.0, model.1, [Upsample, conv, act] per 2x, HR conv, act, last conv
        upconvs, rest = divmod(top[-1] + 1 - 5, 3)
        if rest or upconvs < 0 or top[-1] != 3 * upconvs + 4:
            raise ValueError(f"unexpected RRDBNet layout: top-level layers {top}; scales 1, 2, "
                             "4 and 8 are supported (3 is not)")
        num_blocks = len({key.split(".")[3] for key in old if key.startswith("model.1.sub.")
                          and ".RDB" in key})
        in_nc = int(np.shape(old["model.0.weight"])[1])
        out_nc = int(np.shape(old[f"model.{top[-1]}.weight"])[0])
        shuffle = 1
        if in_nc in (out_nc * 4, out_nc * 16):
            shuffle = 2 if in_nc == out_nc * 4 else 4
        expected = _expected_keys(num_blocks, upconvs)
        missing = [key for key in expected if key not in old]
        if missing:
            raise ValueError(f"RRDBNet state dict lacks {missing[:3]} ({len(missing)} keys)")
        weights = {key: Tensor.from_numpy(np.asarray(old[key], dtype=np.float32), dtype=dtype,
                                          device=device) for key in expected}
        return cls(weights, in_nc=in_nc, out_nc=out_nc, num_blocks=num_blocks,
                   upconvs=upconvs, shuffle_factor=shuffle)

    @property
    def dtype(self) -> np.dtype:
        return self.weights["model.0.weight"].dtype

    def _conv(self, name: str, x: Tensor, *, add: Tensor | None = None,
              slope: float | None = None, scale: float = 1.0,
              in_channels: int | None = None) -> Tensor:
        # LeakyReLU and the residual's scaling in the conv's epilogue where the kernel has one
        return conv2d(x, self.weights[f"{name}.weight"], self.weights[f"{name}.bias"],
                      padding=1, add=add, negative_slope=slope, scale=scale,
                      in_channels=in_channels)

    def _rdb(self, prefix: str, x: Tensor) -> Tensor:
        # 1. dense connections: each conv reads the input and every earlier output, gathered
        # in one tensor as they come (each written once, not copied again per concatenation)
        n, c, h, w = x.shape
        growth = self.weights[f"{prefix}.conv1.0.weight"].shape[0]
        features = Tensor.empty((n, c + 4 * growth, h, w), x.dtype, device=x.device)
        put_slice(features, x, 0, axis=1)
        for k in range(1, 5):
            width = c + (k - 1) * growth
            out = self._conv(f"{prefix}.conv{k}.0", features, slope=0.2, in_channels=width)
            put_slice(features, out, width, axis=1)
        # 2. residual scaled by 0.2 (ESRGAN's residual scaling)
        return self._conv(f"{prefix}.conv5.0", features, add=x, scale=0.2)

    def __call__(self, x: Tensor) -> Tensor:
        """[N, in_nc / shuffle², H, W] float (0..1 images) -> [N, out_nc, H*scale, W*scale].
        Pixel-unshuffled models need H and W divisible by their shuffle factor (the
        upscaler pads). torch: `RRDBNet.forward`."""
        if self.shuffle_factor > 1:
            x = pixel_unshuffle(x, self.shuffle_factor)
        # 1. first conv; the RRDB trunk and its conv, added back (ShortcutBlock)
        first = self._conv("model.0", x)
        h = first
        for i in range(self.num_blocks):
            block_in = h
            for j in (1, 2, 3):
                h = self._rdb(f"model.1.sub.{i}.RDB{j}", h)
            h = h * 0.2 + block_in
        h = self._conv(f"model.1.sub.{self.num_blocks}", h, add=first)
        # 2. nearest 2x and a conv per octave, then HR conv and last conv
        for n in range(1, self.upconvs + 1):
            h = self._conv(f"model.{3 * n}", upsample_nearest2x(h), slope=0.2)
        last = 3 * self.upconvs
        h = self._conv(f"model.{last + 2}", h, slope=0.2)
        return self._conv(f"model.{last + 4}", h)


def pixel_unshuffle(x: Tensor, factor: int) -> Tensor:
    """[N, C, H*r, W*r] -> [N, C*r*r, H, W]. torch: `F.pixel_unshuffle(x, r)`."""
    n, c, hr, wr = x.shape
    if hr % factor or wr % factor:
        raise ValueError(f"pixel_unshuffle: {hr}x{wr} is not divisible by {factor}")
    h, w = hr // factor, wr // factor
    split = x.reshape(n, c, h, factor, w, factor)
    return gpustd.permute(split, (0, 1, 3, 5, 2, 4)).reshape(n, c * factor * factor, h, w)


def pixel_shuffle(x: Tensor, factor: int) -> Tensor:
    """[N, C*r*r, H, W] -> [N, C, H*r, W*r]. torch: `F.pixel_shuffle(x, r)`."""
    n, crr, h, w = x.shape
    c = crr // (factor * factor)
    split = x.reshape(n, c, factor, factor, h, w)
    return gpustd.permute(split, (0, 1, 4, 2, 5, 3)).reshape(n, c, h * factor, w * factor)


def _expected_keys(num_blocks: int, upconvs: int) -> list[str]:
    names = ["model.0"]
    names += [f"model.1.sub.{i}.RDB{j}.conv{k}.0" for i in range(num_blocks)
              for j in (1, 2, 3) for k in range(1, 6)]
    names += [f"model.1.sub.{num_blocks}"]
    names += [f"model.{3 * n}" for n in range(1, upconvs + 1)]
    names += [f"model.{3 * upconvs + 2}", f"model.{3 * upconvs + 4}"]
    return [f"{name}.{kind}" for name in names for kind in ("weight", "bias")]
