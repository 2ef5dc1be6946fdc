"""LTX-2 audio VAE layers (diffusers' autoencoder_kl_ltx2_audio names) on (B, C, T, F)
mel-spectrogram features: convolutions causal along one axis (time, "height", in the
released model), pixel norm (RMS over channels), ResNet blocks, one-head attention over all
positions, and the 2x resamplers that keep time causal."""

from __future__ import annotations

import typing
from typing import Any

from gpucore import Kernel
from gpustd import Tensor, nn, take_slice

from .layers import Place, to_image, to_tokens

__all__ = ["AttnBlock", "CausalConv2d", "Downsample", "Norm", "ResnetBlock", "Upsample",
           "channel_rms_norm", "run_as"]

AXES = ("none", "width", "height", "width-compatibility")
# diffusers' LTX2AudioDownsample zero padding (left, right, top, bottom) per causal axis
_DOWN_PADS = {"none": (0, 1, 0, 1), "width": (2, 0, 0, 1), "height": (0, 1, 2, 0),
              "width-compatibility": (1, 0, 0, 1)}


def run_as(kernel: Any, like: Tensor, *args: Any) -> Tensor:
    """An elementwise kernel's one output (float math in float32), in `like`'s dtype."""
    out = typing.cast(Tensor, kernel(*args))
    return out if out.dtype == like.dtype else out.astype(like.dtype)


def channel_rms_norm(x: Tensor, eps: float, *, silu: bool = False,
                     modulation: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """x [N, C, *spatial] / sqrt(mean(x^2 over C) + eps) (the sum in float32), then * (1 +
    scale) + shift (`modulation` (shift, scale), C values each of x's dtype) and SiLU where
    asked, in one kernel (shaders/nn/channel_rms_norm.wgsl). diffusers: `LTX2AudioPixelNorm`,
    `PerChannelRMSNorm`; torch: `x / torch.sqrt((x ** 2).mean(1, keepdim=True) + eps)`."""
    out = Tensor.empty(x.shape, x.dtype, device=x.device)
    if x.size == 0:
        return out
    channels = x.shape[1]
    size = x.size // (x.shape[0] * channels)
    shift, scale = modulation if modulation is not None else (x, x)  # unread: no MODULATE
    k = Kernel.cached("nn/channel_rms_norm", types={"T": x.dtype},
                      constants={"MODULATE": int(modulation is not None), "SILU": int(silu)})
    pixels = x.shape[0] * size
    k.dispatch(k.groups_for(pixels), x, shift, scale, out, n=pixels, channels=channels,
               size=size, eps=eps)
    return out


class Norm(nn.Module):
    """"pixel": x / sqrt(mean over channels of x^2 + 1e-6), no parameters (diffusers:
    `LTX2AudioPixelNorm`, the released model's); "group": GroupNorm(32, eps 1e-6).
    `silu=True` fuses the SiLU that follows it."""

    def __init__(self, kind: str, channels: int, place: Place) -> None:
        self.group = nn.GroupNorm(32, channels, eps=1e-6, **place) if kind == "group" else None

    def forward(self, x: Tensor, *, silu: bool = False) -> Tensor:
        if self.group is not None:
            return self.group(x, silu=silu)
        return channel_rms_norm(x, 1e-6, silu=silu)


def _pads(axis: str, kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) zero padding of diffusers' LTX2AudioCausalConv2d: all of
    it before on the causal axis, split (the smaller half first) on the other."""
    full, half = kernel - 1, (kernel - 1) // 2
    split = (half, full - half)
    if axis == "height":
        return (full, 0), split
    if axis in ("width", "width-compatibility"):
        return split, (full, 0)
    return split, split


class CausalConv2d(nn.Module):
    """A square-kernel, stride-1 convolution padded causally along `axis` (module docstring).
    diffusers: `LTX2AudioCausalConv2d` (`conv.weight`, `conv.bias`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, axis: str,
                 place: Place) -> None:
        self.pads = _pads(axis, kernel)
        self.kernel = kernel
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, **place)

    def forward(self, x: Tensor, *, add: Tensor | None = None) -> Tensor:
        """add: a residual of the output's shape, added in the conv's epilogue."""
        (top, bottom), (left, right) = self.pads
        if top or bottom or left or right:
            x = nn.pad(x, (left, right, top, bottom))
        return nn.conv2d(x, self.conv.weight, self.conv.bias, add=add)

    def upsampled(self, x: Tensor) -> Tensor:
        """Of x upsampled 2x (nearest): a conv with symmetric padding (the larger side's on
        both) reading x upsampled as it goes, cropped to the causal window, so that neither
        the upsampled nor the padded tensor is written."""
        padding = tuple(max(pair) for pair in self.pads)
        y = nn.conv2d(x, self.conv.weight, self.conv.bias, padding=padding, upsample=2)
        for axis, (before, after) in zip((2, 3), self.pads, strict=True):
            start = max(before, after) - before
            size = 2 * x.shape[axis] + before + after - self.kernel + 1
            if (start, size) != (0, y.shape[axis]):
                y = take_slice(y, start, start + size, axis=axis)
        return y


class ResnetBlock(nn.Module):
    """norm1, SiLU, conv1, norm2, SiLU, conv2, plus the input (through a 1x1 causal
    `nin_shortcut` where the channels change). diffusers: `LTX2AudioResnetBlock` (no time
    embedding, dropout 0)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, axis: str,
                 place: Place) -> None:
        self.norm1 = Norm(norm, in_channels, place)
        self.conv1 = CausalConv2d(in_channels, out_channels, 3, axis, place)
        self.norm2 = Norm(norm, out_channels, place)
        self.conv2 = CausalConv2d(out_channels, out_channels, 3, axis, place)
        self.nin_shortcut = (CausalConv2d(in_channels, out_channels, 1, axis, place)
                             if in_channels != out_channels else None)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)
        h = self.conv1(self.norm1(x, silu=True))
        return self.conv2(self.norm2(h, silu=True), add=shortcut)


class AttnBlock(nn.Module):
    """One-head self-attention over all (time, mel) positions (q, k, v, proj_out 1x1 convs),
    plus the input. diffusers: `LTX2AudioAttnBlock`."""

    def __init__(self, channels: int, norm: str, place: Place) -> None:
        self.norm = Norm(norm, channels, place)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1, **place)
                                                 for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        q, k, v = (to_tokens(conv(h)) for conv in (self.q, self.k, self.v))
        out = to_image(nn.attention(q, k, v, heads=1), x.shape[2], x.shape[3])
        return self.proj_out(out, add=x)


class Downsample(nn.Module):
    """A 3x3 stride-2 conv after diffusers' zero padding per axis (time causal: two rows
    before). diffusers: `LTX2AudioDownsample` (with_conv)."""

    def __init__(self, channels: int, axis: str, place: Place) -> None:
        self.pad = _DOWN_PADS[axis]
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(nn.pad(x, self.pad))


class Upsample(nn.Module):
    """2x nearest upsampling, a causal 3x3 conv, and the first row (column, for "width")
    dropped, so that 2T - 1 frames follow T causally. diffusers: `LTX2AudioUpsample`."""

    def __init__(self, channels: int, axis: str, place: Place) -> None:
        self.axis = axis
        self.conv = CausalConv2d(channels, channels, 3, axis, place)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv.upsampled(x)
        if self.axis in ("height", "width"):
            dim = 2 if self.axis == "height" else 3
            y = take_slice(y, 1, y.shape[dim], axis=dim)
        return y

