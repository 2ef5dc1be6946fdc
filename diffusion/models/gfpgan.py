"""GFPGAN v1.3/v1.4 (`GFPGANv1Clean`) on gpustd: a U-Net encoder whose bottleneck gives the
StyleGAN2 decoder its latents and whose decoder side gives it SFT conditions (scale and shift),
restoring an aligned 512x512 face.

    model = GFPGAN.from_state_dict(tensors, device=device)   # {key: numpy array}
    out = model(x)                 # x: [1, 3, 512, 512] in -1..1 -> [1, 3, 512, 512] in -1..1

Keys as in the release files (`params_ema`): `conv_body_first`, `conv_body_down.{i}`,
`final_conv`, `final_linear`, `conv_body_up.{i}`, `condition_scale.{i}`, `condition_shift.{i}`,
`stylegan_decoder.*` (StyleGAN2's `constant_input`, `style_conv1`, `to_rgb1`, `style_convs`,
`to_rgbs`, `noises`). Channel widths, the output size and the style size are read from the
weights' shapes. torch: spandrel's `GFPGAN` architecture (`GFPGANv1Clean`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import gpustd
from gpucore import Device, default_device
from gpustd import Tensor
from gpustd.nn import conv2d, linear

from .esrgan import leaky_relu
from .resample import bilinear_matrix, resample

__all__ = ["GFPGAN", "downsample_half", "upsample_bilinear2x"]


def upsample_bilinear2x(x: Tensor) -> Tensor:
    """[N, C, H, W] -> [N, C, 2H, 2W]. torch: `F.interpolate(x, scale_factor=2,
    mode="bilinear", align_corners=False)`."""
    h, w = x.shape[2:]
    return resample(x, bilinear_matrix(h, 2 * h, align_corners=False),
                    bilinear_matrix(w, 2 * w, align_corners=False))


def downsample_half(x: Tensor) -> Tensor:
    """[N, C, 2H, 2W] -> [N, C, H, W]: bilinear at scale 0.5 samples between each 2x2 block's
    pixels, so it is their mean. torch: `F.interpolate(x, scale_factor=0.5, mode="bilinear",
    align_corners=False)`."""
    n, c, h, w = x.shape
    blocks = gpustd.permute(x.reshape(n, c, h // 2, 2, w // 2, 2), (0, 1, 2, 4, 3, 5))
    return gpustd.mean(blocks.reshape(n, c, h // 2, w // 2, 4), axis=-1)


class GFPGAN:
    """GFPGANv1Clean with weights on `device` (the module docstring says which keys)."""

    def __init__(self, weights: Mapping[str, Tensor], *, log_size: int, num_style_feat: int,
                 sft_half: bool) -> None:
        self.weights = dict(weights)
        self.log_size, self.num_style_feat, self.sft_half = log_size, num_style_feat, sft_half
        self.size = 2 ** log_size

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, dtype: Any = np.float32,
                        device: Device | None = None) -> GFPGAN:
        """Build from a state dict of numpy arrays. Raises ValueError naming a missing key or
        a layout that is no GFPGANv1Clean (GFPGAN v1's original arch, RestoreFormer)."""
        device = device or default_device()
        config = cls.config(state)
        expected = _expected_keys(config["log_size"])
        weights = {}
        for key in expected:
            value = np.asarray(state[key], dtype=np.float32)
            if key.endswith("modulated_conv.weight"):
                value = value[0]  # stored [1, out, in, k, k]
                # demodulation's sums of squares over the kernel, [out, in]
                squares = np.square(value, dtype=np.float64).sum(axis=(2, 3))
                weights[f"{key}.squares"] = Tensor.from_numpy(
                    squares.astype(np.float32), dtype=dtype, device=device)
            weights[key] = Tensor.from_numpy(value, dtype=dtype, device=device)
        return cls(weights, **config)

    @staticmethod
    def config(state: Mapping[str, Any]) -> dict[str, Any]:
        """log_size, num_style_feat and sft_half as the weights' names and shapes say (nothing
        read). Raises ValueError naming a missing key or a layout that is no GFPGANv1Clean
        (GFPGAN v1's original arch, RestoreFormer)."""
        if "stylegan_decoder.style_conv1.modulated_conv.weight" not in state:
            raise ValueError("not a GFPGANv1Clean state dict (no 'stylegan_decoder.style_conv1."
                             "modulated_conv.weight'; GFPGAN v1.3 and v1.4 are)")
        downs = {int(key.split(".")[1]) for key in state if key.startswith("conv_body_down.")}
        log_size = len(downs) + 2
        style = "stylegan_decoder.style_conv1.modulated_conv.modulation.weight"
        num_style_feat = int(np.shape(state[style])[1])
        sft_half = np.shape(state["condition_scale.0.2.weight"])[0] == \
            np.shape(state["conv_body_up.0.conv2.weight"])[0]
        latents = int(np.shape(state["final_linear.weight"])[0]) // num_style_feat
        if latents != 2 * log_size - 2:
            raise ValueError("GFPGAN with one latent for every layer (different_w) is "
                             f"supported; this file's final_linear gives {latents}")
        missing = [key for key in _expected_keys(log_size) if key not in state]
        if missing:
            raise ValueError(f"GFPGAN state dict lacks {missing[:3]} ({len(missing)} keys)")
        return {"log_size": log_size, "num_style_feat": num_style_feat,
                "sft_half": bool(sft_half)}

    @property
    def dtype(self) -> np.dtype:
        return self.weights["final_linear.weight"].dtype

    @property
    def device(self) -> Device:
        return self.weights["final_linear.weight"].device

    def noise_shapes(self) -> list[tuple[int, int]]:
        """The (h, w) of each StyleConv's noise input, in order (4x4, then two per octave)."""
        return [(4, 4)] + [(2 ** i, 2 ** i) for i in range(3, self.log_size + 1) for _ in "ab"]

    def _conv(self, name: str, x: Tensor, *, padding: int = 1, bias: bool = True) -> Tensor:
        return conv2d(x, self.weights[f"{name}.weight"],
                      self.weights[f"{name}.bias"] if bias else None, padding=padding)

    def _resblock(self, name: str, x: Tensor, *, up: bool) -> Tensor:
        resize = upsample_bilinear2x if up else downsample_half
        out = resize(leaky_relu(self._conv(f"{name}.conv1", x)))
        out = leaky_relu(self._conv(f"{name}.conv2", out))
        return out + self._conv(f"{name}.skip", resize(x), padding=0, bias=False)

    def _condition(self, name: str, x: Tensor) -> Tensor:
        return self._conv(f"{name}.2", leaky_relu(self._conv(f"{name}.0", x)))

    def _modulated(self, name: str, x: Tensor, latent: Tensor, *, demodulate: bool,
                   gain: float = 1.0, upsample: bool = False) -> Tensor:
        # weight * style (* demod) on a batch of one is the conv of x * style, times demod
        # per output channel: demod = rsqrt(sum_k w^2 @ style^2 + 1e-8)
        prefix = f"{name}.modulated_conv"
        style = linear(latent, self.weights[f"{prefix}.modulation.weight"],
                       self.weights[f"{prefix}.modulation.bias"])
        weight = self.weights[f"{prefix}.weight"]
        x = x * style.reshape(1, -1, 1, 1)
        if upsample:
            x = upsample_bilinear2x(x)
        out = conv2d(x, weight, padding=weight.shape[2] // 2)
        if demodulate:
            squares = self.weights[f"{prefix}.weight.squares"]
            demod = gpustd.rsqrt(gpustd.matmul(squares, (style * style).reshape(-1, 1))
                                 + 1e-8) * gain
            out = out * demod.reshape(1, -1, 1, 1)
        return out

    def _style_conv(self, name: str, x: Tensor, latent: Tensor, noise: Tensor, *,
                    upsample: bool = False) -> Tensor:
        out = self._modulated(name, x, latent, demodulate=True, gain=math.sqrt(2.0),
                              upsample=upsample)
        out = out + self.weights[f"{name}.weight"] * noise + \
            self.weights[f"{name}.bias"]
        return leaky_relu(out)

    def _to_rgb(self, name: str, x: Tensor, latent: Tensor, skip: Tensor | None) -> Tensor:
        out = self._modulated(name, x, latent, demodulate=False) + \
            self.weights[f"{name}.bias"]
        return out if skip is None else out + upsample_bilinear2x(skip)

    def __call__(self, x: Tensor, noise: Sequence[np.ndarray] | None = None) -> Tensor:
        """[1, 3, S, S] (S the model's size, 512; an image in -1..1) -> [1, 3, S, S].
        noise: one array per StyleConv of `noise_shapes()` (StyleGAN2's per-pixel noise);
        None draws it from a generator seeded with 0, so a restore is repeatable.
        torch: `GFPGANv1Clean.forward(x, noise=...)[0]` (spandrel draws fresh noise)."""
        if x.shape != (1, 3, self.size, self.size):
            raise ValueError(f"GFPGAN takes one [1, 3, {self.size}, {self.size}] face, got "
                             f"{x.shape}")
        if noise is None:
            rng = np.random.default_rng(0)
            noise = [rng.standard_normal(shape, dtype=np.float32) for shape in self.noise_shapes()]
        noises = [Tensor.from_numpy(np.asarray(n, np.float32).reshape(1, 1, *n.shape[-2:]),
                                    dtype=self.dtype, device=self.device) for n in noise]
        # 1. the U-Net's encoder down to 4x4, and the latents from its bottleneck
        feat = leaky_relu(self._conv("conv_body_first", x, padding=0))
        skips: list[Tensor] = []
        for i in range(self.log_size - 2):
            feat = self._resblock(f"conv_body_down.{i}", feat, up=False)
            skips.insert(0, feat)
        feat = leaky_relu(self._conv("final_conv", feat))
        latents = linear(feat.reshape(1, -1), self.weights["final_linear.weight"],
                         self.weights["final_linear.bias"]).reshape(-1, self.num_style_feat)
        # 2. its decoder side: the SFT conditions (scale, shift) at every size
        conditions = []
        for i in range(self.log_size - 2):
            feat = self._resblock(f"conv_body_up.{i}", feat + skips[i], up=True)
            conditions += [self._condition(f"condition_scale.{i}", feat),
                           self._condition(f"condition_shift.{i}", feat)]
        # 3. StyleGAN2 from its constant, each octave's first conv's output SFT-modulated
        decoder = "stylegan_decoder"
        latent = [latents[i:i + 1] for i in range(latents.shape[0])]
        out = self.weights[f"{decoder}.constant_input.weight"]
        out = self._style_conv(f"{decoder}.style_conv1", out, latent[0], noises[0])
        skip = self._to_rgb(f"{decoder}.to_rgb1", out, latent[1], None)
        for octave in range(self.log_size - 2):
            i = 2 * octave + 1
            out = self._style_conv(f"{decoder}.style_convs.{2 * octave}", out, latent[i],
                                   noises[i], upsample=True)
            if i < len(conditions):
                scale, shift = conditions[i - 1], conditions[i]
                if self.sft_half:
                    same, sft = gpustd.split(out, 2, axis=1)
                    out = gpustd.concatenate([same, sft * scale + shift], axis=1)
                else:
                    out = out * scale + shift
            out = self._style_conv(f"{decoder}.style_convs.{2 * octave + 1}", out,
                                   latent[i + 1], noises[i + 1])
            skip = self._to_rgb(f"{decoder}.to_rgbs.{octave}", out, latent[i + 2], skip)
        return skip


def _expected_keys(log_size: int) -> list[str]:
    levels = range(log_size - 2)
    convs = ["conv_body_first", "final_conv", "final_linear"]
    convs += [f"conv_body_{side}.{i}.conv{k}" for side in ("down", "up") for i in levels
              for k in (1, 2)]
    convs += [f"condition_{kind}.{i}.{k}" for kind in ("scale", "shift") for i in levels
              for k in (0, 2)]
    keys = [f"{name}.{kind}" for name in convs for kind in ("weight", "bias")]
    keys += [f"conv_body_{side}.{i}.skip.weight" for side in ("down", "up") for i in levels]
    decoder = "stylegan_decoder"
    styled = [f"{decoder}.style_conv1", f"{decoder}.to_rgb1"]
    styled += [f"{decoder}.style_convs.{j}" for j in range(2 * (log_size - 2))]
    styled += [f"{decoder}.to_rgbs.{j}" for j in levels]
    for name in styled:
        keys += [f"{name}.modulated_conv.{part}" for part in
                 ("weight", "modulation.weight", "modulation.bias")]
        keys += [f"{name}.bias"] + ([f"{name}.weight"] if "style_conv" in name else [])
    return [*keys, f"{decoder}.constant_input.weight"]
