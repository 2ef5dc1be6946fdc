"""LTX-2's video VAE blocks (diffusers' autoencoder_kl_ltx2 names): the per-pixel RMS norm
over channels (no weights), the residual block (its norms shifted and scaled by a timestep
where the decoder is timestep-conditioned), the space-to-depth down-sampler and the
depth-to-space up-sampler with their residual paths, and the down, mid and up blocks.

A video is frame-major, (T, C, H, W), as HunyuanVideo's VAE runs it, and its causal 3D
convolution (hunyuan_video_vae_blocks.CausalConv3d, spatial padding "zeros" or "reflect" as
the config says, frames replicated in front or, not causal, on both sides) is that one:
each temporal tap a 2D convolution over the frames as its batch."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpustd import Tensor, concatenate, nn, permute, take_slice
from gpustd.reduction import mean

from .dit_layers import TimestepEmbedding
from .hunyuan_video_vae_blocks import CausalConv3d, Conv3d
from .layers import Place
from .ltx2_audio_blocks import channel_rms_norm

__all__ = ["DownBlock", "MidBlock", "TimeEmbedder", "UpBlock", "rms_silu"]

_EPS = 1e-8  # PerChannelRMSNorm's
STRIDES = {"spatial": (1, 2, 2), "temporal": (2, 1, 1), "spatiotemporal": (2, 2, 2),
           "conv": (2, 2, 2)}  # (time, height, width) of each down/upsample_type


def rms_silu(x: Tensor, modulation: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """SiLU(x / sqrt(mean(x^2 over channels) + 1e-8) * (1 + scale) + shift) of frames
    (T, C, H, W), `modulation` (shift, scale) each (1, C, 1, 1) or none, in one kernel.
    diffusers: `nonlinearity(PerChannelRMSNorm()(x) * (1 + scale) + shift)`."""
    return channel_rms_norm(x, _EPS, silu=True, modulation=modulation)


class TimeEmbedder(nn.Module):
    """A (scaled) timestep's sinusoid (256, cos first) through linear_1, SiLU, linear_2.
    diffusers: `PixArtAlphaCombinedTimestepSizeEmbeddings(dim, 0)`."""

    def __init__(self, dim: int, place: Place) -> None:
        self.dtype = place["dtype"]
        self.timestep_embedder = TimestepEmbedding(256, dim, place)

    def forward(self, timestep: float) -> Tensor:
        device = self.timestep_embedder.linear_1.weight.device
        sinusoid = nn.timestep_embedding(np.asarray([timestep], np.float32), 256,
                                         flip_sin_to_cos=True, downscale_freq_shift=0,
                                         dtype=self.dtype, device=device)
        return self.timestep_embedder(sinusoid)


def _rows(temb: Tensor, table: Tensor) -> list[Tensor]:
    """temb (1, n C) + table (n, C) as n rows (1, C, 1, 1): diffusers' `temb.unflatten(1,
    (n, -1)) + scale_shift_table[None, ..., None, None, None]`, unbound."""
    count, channels = table.shape
    both = temb.reshape(count, channels) + table
    return [take_slice(both, i, i + 1, axis=0).reshape(1, channels, 1, 1)
            for i in range(count)]


class ResnetBlock(nn.Module):
    """norm1 (+ timestep shift, scale), SiLU, conv1, norm2 (+ shift, scale), SiLU, conv2,
    plus the input (LayerNorm'd over channels and through a 1x1x1 conv_shortcut where the
    channels change). diffusers: `LTX2VideoResnetBlock3d` (no noise injection)."""

    def __init__(self, in_dim: int, out_dim: int, place: Place, pad: str, *,
                 timestep: bool = False, eps: float = 1e-6) -> None:
        self.conv1 = CausalConv3d(in_dim, out_dim, 3, place, padding_mode=pad)
        self.conv2 = CausalConv3d(out_dim, out_dim, 3, place, padding_mode=pad)
        self.norm3 = self.conv_shortcut = None
        if in_dim != out_dim:
            self.norm3 = nn.LayerNorm(in_dim, eps, **place)
            self.conv_shortcut = Conv3d(in_dim, out_dim, 1, place)
        self.scale_shift_table = nn.parameter((4, in_dim), **place) if timestep else None

    def forward(self, x: Tensor, temb: Tensor | None, causal: bool) -> Tensor:
        first = second = None
        if self.scale_shift_table is not None:
            assert temb is not None  # the block's time embedding
            shift_1, scale_1, shift_2, scale_2 = _rows(temb, self.scale_shift_table)
            first, second = (shift_1, scale_1), (shift_2, scale_2)
        h = self.conv1(rms_silu(x, first), causal=causal)
        shortcut = x
        if self.norm3 is not None and self.conv_shortcut is not None:
            channels_last = self.norm3(permute(x, (0, 2, 3, 1)))
            shortcut = self.conv_shortcut(permute(channels_last, (0, 3, 1, 2)))
        return self.conv2(rms_silu(h, second), causal=causal, add=shortcut)


def space_to_depth(x: Tensor, stride: tuple[int, int, int]) -> Tensor:
    """Frames (T st, C, H sh, W sw) -> (T, C st sh sw, H, W), channel c st sh sw + ...:
    diffusers' `unflatten`s and `permute(0, 1, 3, 5, 7, 2, 4, 6).flatten(1, 4)`, in two
    permutes (the frames' stride, then the pixels': one would be 7 strided axes)."""
    st, sh, sw = stride
    frames, channels, height, width = x.shape
    if st > 1:
        x = permute(x.reshape(frames // st, st, channels, height * width), (0, 2, 1, 3))
    split = x.reshape(frames // st * channels * st, height // sh, sh, width // sw, sw)
    return permute(split, (0, 2, 4, 1, 3)).reshape(
        frames // st, channels * st * sh * sw, height // sh, width // sw)


def depth_to_space(x: Tensor, stride: tuple[int, int, int], drop: int) -> Tensor:
    """Frames (T, C st sh sw, H, W) -> (T st - drop, C, H sh, W sw), the first `drop` frames
    cut: diffusers' `reshape(B, -1, st, sh, sw, T, H, W).permute(0, 1, 5, 2, 6, 3, 7, 4)`
    flattened, `[:, :, drop:]`, in two permutes as space_to_depth."""
    st, sh, sw = stride
    frames, channels, height, width = x.shape
    out_channels = channels // (st * sh * sw)
    if st > 1:
        x = permute(x.reshape(frames, out_channels, st, sh * sw * height * width), (0, 2, 1, 3))
    split = x.reshape(frames * st * out_channels, sh, sw, height, width)
    out = permute(split, (0, 3, 1, 4, 2)).reshape(frames * st, out_channels, height * sh,
                                                  width * sw)
    return take_slice(out, drop, frames * st, axis=0) if drop else out


class Downsampler(nn.Module):
    """The first st - 1 frames repeated in front, then a causal conv's space-to-depth plus
    the input's, its channels averaged in groups. diffusers: `LTX2VideoDownsampler3d`."""

    def __init__(self, in_dim: int, out_dim: int, stride: tuple[int, int, int],
                 place: Place, pad: str) -> None:
        self.stride = stride
        self.group = in_dim * math.prod(stride) // out_dim
        self.conv = CausalConv3d(in_dim, out_dim // math.prod(stride), 3, place,
                                 padding_mode=pad)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        if self.stride[0] > 1:
            x = concatenate([take_slice(x, 0, self.stride[0] - 1, axis=0), x], axis=0)
        residual = space_to_depth(x, self.stride)
        if self.group > 1:
            frames, channels, height, width = residual.shape
            grouped = residual.reshape(frames, channels // self.group, self.group, height, width)
            residual = mean(grouped, axis=2)
            if residual.dtype != x.dtype:
                residual = residual.astype(x.dtype)
        return space_to_depth(self.conv(x, causal=causal), self.stride) + residual


class Upsampler(nn.Module):
    """A causal conv's depth-to-space (the first st - 1 frames cut), plus with `residual`
    the input's depth-to-space repeated over the channels. diffusers: `LTX2VideoUpsampler3d`."""

    def __init__(self, dim: int, stride: tuple[int, int, int], residual: bool, factor: int,
                 place: Place, pad: str) -> None:
        self.stride, self.residual, self.factor = stride, residual, factor
        self.conv = CausalConv3d(dim, dim * math.prod(stride) // factor, 3, place,
                                 padding_mode=pad)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        add = None
        if self.residual:
            # the input's depth-to-space repeated over the channels is, before the conv's
            # depth-to-space, the input repeated over the channels: added in its epilogue
            repeats = math.prod(self.stride) // self.factor
            add = concatenate([x] * repeats, axis=1) if repeats > 1 else x
        return depth_to_space(self.conv(x, causal=causal, add=add), self.stride,
                              self.stride[0] - 1)


class DownBlock(nn.Module):
    """Residual blocks, then a down-sampler (`downsample_type` "spatial", "temporal",
    "spatiotemporal", or "conv": a stride-2 causal conv). diffusers: `LTX2VideoDownBlock3D`."""

    def __init__(self, in_dim: int, out_dim: int, count: int, kind: str | None, place: Place,
                 pad: str, eps: float) -> None:
        self.resnets = nn.ModuleList([ResnetBlock(in_dim, in_dim, place, pad, eps=eps)
                                      for _ in range(count)])
        samplers: list[Any] = []
        if kind == "conv":
            samplers.append(CausalConv3d(in_dim, in_dim, 3, place, stride=(2, 2),
                                         padding_mode=pad))
        elif kind is not None:
            samplers.append(Downsampler(in_dim, out_dim, STRIDES[kind], place, pad))
        self.downsamplers = nn.ModuleList(samplers)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x, None, causal)
        for sampler in self.downsamplers:
            x = sampler(x, causal=causal)
        return x


class MidBlock(nn.Module):
    """Residual blocks, with a time_embedder of their 4 shifts and scales where the decoder
    is timestep-conditioned. diffusers: `LTX2VideoMidBlock3d`."""

    def __init__(self, dim: int, count: int, place: Place, pad: str, *, timestep: bool,
                 eps: float) -> None:
        self.time_embedder = TimeEmbedder(4 * dim, place) if timestep else None
        self.resnets = nn.ModuleList([ResnetBlock(dim, dim, place, pad, timestep=timestep,
                                                  eps=eps) for _ in range(count)])

    def forward(self, x: Tensor, temb: Tensor | None, causal: bool) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x, temb, causal)
        return x


class UpBlock(MidBlock):
    """A conv_in residual block where the channels change, an up-sampler, residual blocks.
    diffusers: `LTX2VideoUpBlock3d` (no noise injection)."""

    def __init__(self, in_dim: int, out_dim: int, count: int, stride: tuple[int, int, int] |
                 None, residual: bool, factor: int, place: Place, pad: str, *,
                 timestep: bool, eps: float) -> None:
        # diffusers sizes its time_embedder by in_dim: the same, as timestep conditioning
        # comes without conv_in (ltx2_vae's config check)
        super().__init__(out_dim, count, place, pad, timestep=timestep, eps=eps)
        self.conv_in = (ResnetBlock(in_dim, out_dim, place, pad, eps=eps)
                        if in_dim != out_dim else None)
        self.upsamplers = nn.ModuleList(
            [] if stride is None else [Upsampler(out_dim * factor, stride, residual, factor,
                                                 place, pad)])

    def forward(self, x: Tensor, temb: Tensor | None, causal: bool) -> Tensor:
        if self.conv_in is not None:
            x = self.conv_in(x, None, causal)
        for sampler in self.upsamplers:
            x = sampler(x, causal=causal)
        return super().forward(x, temb, causal)
