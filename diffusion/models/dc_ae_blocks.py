"""DC-AE's blocks (diffusers' autoencoder_dc names): the RMS norm over channels, the residual
block, the EfficientViT block (multi-scale ReLU linear attention, then GLUMBConv) and the
resamplers with their parameter-free shortcuts (space to channels with channel averaging going
down, channel duplication then channels to space going up).

Every block works on NCHW images; the attention's and GLUMBConv's 1x1 projections keep the
shapes diffusers stores (to_q (C, C) matrices, conv_inverted (8C, C, 1, 1) kernels)."""

from __future__ import annotations

import math
import typing
from typing import Any

import numpy as np

from gpustd import (
    Tensor,
    concatenate,
    elementwise_kernel,
    matmul,
    nn,
    reduction_kernel,
    take_slice,
)
from gpustd.reduction import mean

from .dc_ae_attention import multiscale_linear_attention
from .esrgan import pixel_shuffle, pixel_unshuffle
from .hunyuanimage_vae import repeat_channels
from .layers import Place

__all__ = ["ChannelRMSNorm", "DownBlock", "EfficientViTBlock", "ResBlock", "UpBlock",
           "activation", "group_mean"]


@reduction_kernel(post=lambda total, count: total / count)
def _mean_square(x):  # no tensor of the squares: the widest a norm made, 4 bytes a value
    return float(x) * float(x)


def _normed(x, mean_square, eps, weight, bias):
    return float(x) / math.sqrt(mean_square + eps) * float(weight) + float(bias)


def _silu_of(gate):
    return float(gate) / (1.0 + math.exp(-float(gate)))


# each in float32, written as float32 or (the *16 twins) float16: a float16 model's results
# come out in its dtype with no float32 tensor and no cast pass after them


@elementwise_kernel
def _rms_add(x, mean_square, eps, weight, bias, residual):
    return _normed(x, mean_square, eps, weight, bias) + float(residual)


@elementwise_kernel
def _rms_add16(x, mean_square, eps, weight, bias, residual):
    return np.float16(_normed(x, mean_square, eps, weight, bias) + float(residual))


@elementwise_kernel
def _rms_relu(x, mean_square, eps, weight, bias):
    return max(_normed(x, mean_square, eps, weight, bias), 0.0)


@elementwise_kernel
def _rms_relu16(x, mean_square, eps, weight, bias):
    return np.float16(max(_normed(x, mean_square, eps, weight, bias), 0.0))


@elementwise_kernel
def _gated(x, gate):
    return float(x) * _silu_of(gate)


@elementwise_kernel
def _gated16(x, gate):
    return np.float16(float(x) * _silu_of(gate))


def _in_dtype(kernels: tuple[Any, Any], x: Tensor, *args: Any) -> Tensor:
    """kernels[0] (float32 out) or kernels[1] (float16 out) as x's dtype asks."""
    return typing.cast(Tensor, kernels[x.dtype == np.float16](x, *args))


class ChannelRMSNorm(nn.Module):
    """x / sqrt(mean(x^2 over channels) + eps) * weight + bias on (B, C, H, W), the statistics
    in float32, then `residual` added (or ReLU applied). diffusers: `RMSNorm(C, 1e-5,
    elementwise_affine=True, bias=True)` over `x.movedim(1, -1)`."""

    def __init__(self, channels: int, place: Place, eps: float = 1e-5) -> None:
        self.eps = eps
        self.weight = nn.parameter((channels,), **place)
        self.bias = nn.parameter((channels,), **place)

    def forward(self, x: Tensor, *, residual: Tensor | None = None,
                relu: bool = False) -> Tensor:
        mean_square = _mean_square(x, axis=1, keepdims=True)
        weight, bias = self.weight.reshape(1, -1, 1, 1), self.bias.reshape(1, -1, 1, 1)
        if relu:
            return _in_dtype((_rms_relu, _rms_relu16), x, mean_square, self.eps, weight, bias)
        added = residual if residual is not None else 0.0
        return _in_dtype((_rms_add, _rms_add16), x, mean_square, self.eps, weight, bias, added)


@elementwise_kernel
def _relu(x):  # x's dtype (0.0 a weak scalar)
    return max(x, 0.0)


def activation(name: str, what: str) -> Any:
    """The gpustd function of a config's activation name (diffusers' get_activation)."""
    table = {"silu": nn.silu, "relu": _relu}
    if name not in table:
        raise ValueError(f"DC-AE: {what} {name!r} is not supported (supported: silu, relu); "
                         "fix the VAE's config.json")
    return table[name]


def group_mean(x: Tensor, size: int) -> Tensor:
    """Consecutive channels averaged in groups of `size` (in float32, written in x's dtype):
    (B, C, H, W) -> (B, C/size, H, W). torch: `x.unflatten(1, (-1, size)).mean(dim=2)`."""
    if size == 1:
        return x
    b, c, h, w = x.shape
    return mean(x.reshape(b, c // size, size, h, w), axis=2)


class ResBlock(nn.Module):
    """conv1, activation, conv2 (no bias), norm, plus the input. diffusers: `ResBlock`."""

    def __init__(self, channels: int, act_fn: str, place: Place) -> None:
        self.act = activation(act_fn, "decoder_act_fns")
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, **place)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False, **place)
        self.norm = ChannelRMSNorm(channels, place)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv2(self.act(self.conv1(x))), residual=x)


class _Aggregation(nn.Module):
    """A depthwise k x k conv of q, k and v, then a 1x1 conv within each head's channels.
    diffusers: `SanaMultiscaleAttentionProjection`."""

    def __init__(self, channels: int, heads: int, kernel: int, place: Place) -> None:
        self.heads = heads
        self.proj_in = nn.Conv2d(3 * channels, 3 * channels, kernel, padding=kernel // 2,
                                 groups=3 * channels, bias=False, **place)
        self.proj_out = nn.Conv2d(3 * channels, 3 * channels, 1, groups=3 * heads, bias=False,
                                  **place)

    def forward(self, qkv: Tensor) -> Tensor:
        b, c3, h, w = qkv.shape
        spread = self.proj_in(qkv).reshape(b, 3 * self.heads, c3 // (3 * self.heads), h * w)
        head_dim = c3 // (3 * self.heads)
        # the grouped 1x1 conv as one batched matmul over the 3 * heads groups
        kernels = self.proj_out.weight.reshape(3 * self.heads, head_dim, head_dim)
        return matmul(kernels, spread).reshape(b, c3, h, w)


class _LinearAttention(nn.Module):
    """Multi-scale ReLU linear attention (LiteMLA): q, k, v by 1x1 projections, each scale's
    aggregation of them, attention within each group of 3 x head_dim channels, the projection
    to_out, the norm, plus the input. diffusers: `SanaMultiscaleLinearAttention`
    (`residual_connection=True`)."""

    def __init__(self, channels: int, head_dim: int, scales: tuple[int, ...],
                 place: Place) -> None:
        if channels % head_dim:
            raise ValueError(f"DC-AE: {channels} channels do not split into heads of "
                             f"attention_head_dim={head_dim}; fix the VAE's config.json")
        self.head_dim, heads = head_dim, channels // head_dim
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels, bias=False, **place)
                                           for _ in range(3))
        self.to_qkv_multiscale = nn.ModuleList([_Aggregation(channels, heads, k, place)
                                                for k in scales])
        self.to_out = nn.Linear(channels * (1 + len(scales)), channels, bias=False, **place)
        self.norm_out = ChannelRMSNorm(channels, place)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        pixels = x.reshape(b, c, h * w)
        # the projections as (C, C) @ (C, N) per image: the channels stay where they are
        qkv = concatenate([matmul(linear.weight, pixels) for linear in (self.to_q, self.to_k,
                                                                        self.to_v)], axis=1)
        qkv = qkv.reshape(b, 3 * c, h, w)
        scales = [qkv, *(aggregate(qkv) for aggregate in self.to_qkv_multiscale)]
        joined = concatenate(scales, axis=1) if len(scales) > 1 else qkv
        attended = multiscale_linear_attention(joined.reshape(b, -1, h * w), self.head_dim)
        out = matmul(self.to_out.weight, attended).reshape(b, c, h, w)
        return self.norm_out(out, residual=x)


class _GLUMBConv(nn.Module):
    """1x1 conv to 8C, SiLU, depthwise 3x3, the first half gated by SiLU of the second, 1x1
    conv back to C, the norm, plus the input. diffusers: `GLUMBConv(C, C, norm_type=
    "rms_norm")`."""

    def __init__(self, channels: int, place: Place) -> None:
        hidden = 4 * channels
        self.conv_inverted = nn.Conv2d(channels, 2 * hidden, 1, **place)
        self.conv_depth = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden,
                                    **place)
        self.conv_point = nn.Conv2d(hidden, channels, 1, bias=False, **place)
        self.norm = ChannelRMSNorm(channels, place)

    def forward(self, x: Tensor) -> Tensor:
        wide = self.conv_depth(nn.silu(self.conv_inverted(x)))
        half = wide.shape[1] // 2
        gated = _in_dtype((_gated, _gated16), take_slice(wide, 0, half, axis=1),
                          take_slice(wide, half, 2 * half, axis=1))
        return self.norm(self.conv_point(gated), residual=x)


class EfficientViTBlock(nn.Module):
    """The attention, then GLUMBConv. diffusers: `EfficientViTBlock`."""

    def __init__(self, channels: int, head_dim: int, scales: tuple[int, ...],
                 place: Place) -> None:
        self.attn = _LinearAttention(channels, head_dim, scales, place)
        self.conv_out = _GLUMBConv(channels, place)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_out(self.attn(x))


class DownBlock(nn.Module):
    """Half the resolution: a stride-2 conv (`unshuffle` false) or a conv to a quarter of the
    channels then space to channels, plus (`shortcut`) the input's space to channels averaged
    down to as many channels. diffusers: `DCDownBlock2d`."""

    def __init__(self, in_channels: int, out_channels: int, *, unshuffle: bool, shortcut: bool,
                 place: Place) -> None:
        if (unshuffle and out_channels % 4) or (shortcut and (4 * in_channels) % out_channels):
            raise ValueError(f"DC-AE: a down-sampler from {in_channels} to {out_channels} "
                             "channels is not supported; fix the VAE's block_out_channels")
        self.unshuffle, self.shortcut = unshuffle, shortcut
        self.group_size = 4 * in_channels // out_channels
        self.conv = nn.Conv2d(in_channels, out_channels // 4 if unshuffle else out_channels, 3,
                              stride=1 if unshuffle else 2, padding=1, **place)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        if self.unshuffle:
            y = pixel_unshuffle(y, 2)
        if not self.shortcut:
            return y
        return y + group_mean(pixel_unshuffle(x, 2), self.group_size)


class UpBlock(nn.Module):
    """Twice the resolution: a conv of the nearest-upsampled input (`interpolate`) or a conv
    to four times the channels then channels to space, plus (`shortcut`) the input's channels
    duplicated, then moved to space. diffusers: `DCUpBlock2d`."""

    def __init__(self, in_channels: int, out_channels: int, *, interpolate: bool,
                 shortcut: bool, place: Place) -> None:
        if shortcut and (4 * out_channels) % in_channels:
            raise ValueError(f"DC-AE: an up-sampler from {in_channels} to {out_channels} "
                             "channels is not supported; fix the VAE's block_out_channels")
        self.interpolate, self.shortcut = interpolate, shortcut
        self.repeats = 4 * out_channels // in_channels
        self.conv = nn.Conv2d(in_channels, out_channels if interpolate else 4 * out_channels,
                              3, padding=1, **place)

    def forward(self, x: Tensor) -> Tensor:
        duplicated = repeat_channels(x, self.repeats) if self.shortcut else None
        if self.interpolate:
            y = self.conv(x, upsample=2)
            return y if duplicated is None else y + pixel_shuffle(duplicated, 2)
        # the shuffle is linear: the shortcut joins in the conv's epilogue, one shuffle after
        return pixel_shuffle(self.conv(x, add=duplicated), 2)
