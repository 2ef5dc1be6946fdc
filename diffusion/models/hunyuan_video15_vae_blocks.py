"""HunyuanVideo 1.5's VAE blocks (diffusers' autoencoder_kl_hunyuanvideo15 names): residual
blocks of RMS norms and causal 3D convolutions (HunyuanVideo 1.0's, hunyuan_video_vae_blocks:
replicate padding, the first frame copied in front), the mid block's frame-causal attention,
and the samplers that move 2x2 pixels (and 2 frames) between space and channels, each with a
parameter-free shortcut: channels averaged going down, repeated going up. A video is
frame-major, (T, C, H, W), as in HunyuanVideo 1.0's blocks.

A sampler's first frame has no partner in time: going down its 2x2 pixels fill half the
channels and are copied into the other half; going up it reads half the convolution's
channels (diffusers' `h_first[:, : C // 2]`), its shortcut repeated half as often.
"""

from __future__ import annotations

import numpy as np

from gpustd import Tensor, asarray, concatenate, nn, permute, take_slice
from gpustd.gather import gather
from gpustd.indexing import strided_copy
from gpustd.reduction import mean

from .hunyuan_video_vae_blocks import CausalConv3d, Conv3d
from .layers import Place
from .qwen_image_vae import RMSNorm

__all__ = ["AttnBlock", "Downsample", "Level", "MidBlock", "ResnetBlock", "Upsample",
           "group_mean", "repeat_channels"]


def group_mean(x: Tensor, groups: int) -> Tensor:
    """(T, C, H, W) -> (T, groups, H, W), each the mean of C / groups consecutive channels.
    torch: `x.view(B, groups, C // groups, T, H, W).mean(dim=2)` of diffusers' layout."""
    frames, channels, height, width = x.shape
    return mean(x.reshape(frames, groups, channels // groups, height * width), axis=2).reshape(
        frames, groups, height, width)


def repeat_channels(x: Tensor, index: Tensor) -> Tensor:
    """(T, C, H, W) -> (T, K / T, H, W): the (T C) frame-channels of x at `index` (K of
    them, frame-major): a channel repeat (torch: `repeat_interleave` over dim 1) in one
    gather."""
    frames, channels, height, width = x.shape
    rows = gather(x.reshape(frames * channels, height * width), index, 0)
    return rows.reshape(frames, index.shape[0] // frames, height, width)


class ResnetBlock(nn.Module):
    """norm1, SiLU, conv1, norm2, SiLU, conv2, plus the input (through a 1x1x1 conv_shortcut
    where the channels change). diffusers: `HunyuanVideo15ResnetBlock`."""

    def __init__(self, in_dim: int, out_dim: int, place: Place) -> None:
        self.norm1 = RMSNorm(in_dim, place)
        self.conv1 = CausalConv3d(in_dim, out_dim, 3, place)
        self.norm2 = RMSNorm(out_dim, place)
        self.conv2 = CausalConv3d(out_dim, out_dim, 3, place)
        self.conv_shortcut = Conv3d(in_dim, out_dim, 1, place) if in_dim != out_dim else None

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        h = self.conv1(self.norm1(x, silu=True))
        return self.conv2(self.norm2(h, silu=True), add=shortcut)


class AttnBlock(nn.Module):
    """x plus one-head attention over the pixels of all frames, each pixel seeing its own
    frame's and the earlier frames' (diffusers' `prepare_causal_attention_mask`): frame t's
    queries attend to the first (t + 1) H W keys, one attention a frame. to_q/k/v, proj_out:
    1x1x1 convolutions, loaded as (C, C) linears. diffusers: `HunyuanVideo15AttnBlock`."""

    def __init__(self, dim: int, place: Place) -> None:
        self.norm = RMSNorm(dim, place)
        self.to_q, self.to_k, self.to_v, self.proj_out = (
            nn.Linear(dim, dim, **place) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        frames, channels, height, width = x.shape
        pixels = height * width

        def tokens(y: Tensor) -> Tensor:
            return permute(y.reshape(frames, channels, pixels), (0, 2, 1)).reshape(
                1, frames * pixels, channels)

        q, k, v = nn.Linear.each(tokens(self.norm(x)), [self.to_q, self.to_k, self.to_v])
        out = [nn.attention(take_slice(q, t * pixels, (t + 1) * pixels, axis=1),
                            take_slice(k, 0, (t + 1) * pixels, axis=1),
                            take_slice(v, 0, (t + 1) * pixels, axis=1), heads=1)
               for t in range(frames)]
        mixed = self.proj_out(concatenate(out, axis=1) if frames > 1 else out[0],
                              add_to=tokens(x))
        return permute(mixed.reshape(frames, pixels, channels), (0, 2, 1)).reshape(x.shape)


class MidBlock(nn.Module):
    """Residual block, attention, residual block. diffusers: `HunyuanVideo15MidBlock`."""

    def __init__(self, dim: int, place: Place) -> None:
        self.resnets = nn.ModuleList([ResnetBlock(dim, dim, place) for _ in range(2)])
        self.attentions = nn.ModuleList([AttnBlock(dim, place)])

    def forward(self, x: Tensor) -> Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


def _pack(x: Tensor, frame: int, count: int, step: int, pairs: int, out: Tensor,
          out_frame: int) -> None:
    """out[out_frame + i] = x's frame `frame` + step i with its 2x2 pixels moved into
    channels (dt, dy, dx, c), i < count; `pairs` 2 adds frame + step i + 1 as dt = 1 (step
    2), or the same frame again (step 1: a first frame). diffusers:
    `_dcae_downsample_rearrange` (and `cat([h_first, h_first])`)."""
    _, channels, height, width = x.shape
    h, w = height // 2, width // 2
    size, plane = channels * height * width, h * w
    strided_copy(x, frame * size, out, out_frame * out.shape[1] * plane, [
        (count, step * size, pairs * 4 * channels * plane),
        (pairs, size if step == 2 else 0, 4 * channels * plane),
        (2, width, 2 * channels * plane), (2, 1, channels * plane),
        (channels, height * width, plane), (h, 2 * width, w), (w, 2, 1)])


class Downsample(nn.Module):
    """A causal conv to out / 4 (out / 8 with `time`) channels, its 2x2 pixels (and pairs of
    frames after the first) moved into channels; plus x moved the same way with groups of its
    channels averaged to out (the first frame's groups half as large: it has no partner).
    diffusers: `HunyuanVideo15Downsample`."""

    def __init__(self, in_dim: int, out_dim: int, time: bool, place: Place) -> None:
        self.conv = CausalConv3d(in_dim, out_dim // (8 if time else 4), 3, place)
        self.time, self.out_dim = time, out_dim

    def forward(self, x: Tensor) -> Tensor:
        h, (frames, in_dim, height, width) = self.conv(x), x.shape
        # (first frame, count, step, pairs): the first alone, then pairs of frames
        spans = ([(0, 1, 1, 2), (1, (frames - 1) // 2, 2, 2)] if self.time
                 else [(0, frames, 1, 1)])
        spans = [span for span in spans if span[1]]
        shape = (sum(span[1] for span in spans), self.out_dim, height // 2, width // 2)
        out = Tensor.empty(shape, x.dtype, device=x.device)
        shortcut, at = [], 0
        for frame, count, step, pairs in spans:
            _pack(h, frame, count, step, pairs, out, at)
            moved = Tensor.empty((count, 4 * step * in_dim, *shape[2:]), x.dtype,
                                 device=x.device)
            _pack(x, frame, count, step, step, moved, 0)
            shortcut.append(group_mean(moved, self.out_dim))
            at += count
        return out + (concatenate(shortcut) if len(shortcut) > 1 else shortcut[0])


def _unpack(y: Tensor, frame: int, count: int, pairs: int, strides: tuple[int, int, int],
            out: Tensor, out_frame: int) -> None:
    """The reverse move: y's frames frame + i (i < count), channels (dt, dy, dx, c) at the
    channel `strides` of dt, dy, dx (c the last), written as out's 2x2 pixels of frames
    out_frame + pairs i + dt. diffusers: `_dcae_upsample_rearrange`."""
    _, packed, height, width = y.shape
    channels, plane = out.shape[1], height * width
    big = 4 * plane
    dt, dy, dx = (s * plane for s in strides)
    strided_copy(y, frame * packed * plane, out, out_frame * channels * big, [
        (count, packed * plane, pairs * channels * big), (pairs, dt, channels * big),
        (channels, plane, big), (height, width, 4 * width), (2, dy, 2 * width),
        (width, 1, 2), (2, dx, 1)])


class Upsample(nn.Module):
    """A causal conv to 4 out (8 out with `time`) channels, moved into 2x2 pixels (and pairs
    of frames after the first); plus x's channels repeated, moved the same way. The shortcut
    is added in the convolution's layout (a gather of x's channels, summed by the conv), so
    that one copy moves both. diffusers: `HunyuanVideo15Upsample`."""

    def __init__(self, in_dim: int, out_dim: int, time: bool, place: Place) -> None:
        self.factor = 8 if time else 4
        self.conv = CausalConv3d(in_dim, out_dim * self.factor, 3, place)
        self.time, self.in_dim, self.out_dim = time, in_dim, out_dim
        self.repeats = self.factor * out_dim // in_dim
        self._index: dict[int, Tensor] = {}

    def _shortcut_index(self, frames: int) -> np.ndarray:
        """For each frame and conv channel, the frame-channel of x its shortcut copies."""
        packed = np.arange(self.factor * self.out_dim)
        later = packed // self.repeats  # diffusers: repeat_interleave of x's moved channels
        rows = [later + t * self.in_dim for t in range(frames)]
        if self.time:  # frame 0: channels (dy, dx, 0, c) read repeats / 2 copies of (dy, dx)
            pixel, rest = packed // (2 * self.out_dim), packed % (2 * self.out_dim)
            first = (pixel * self.out_dim + rest) // (self.repeats // 2)
            rows[0] = np.where(rest < self.out_dim, first, 0)
        return np.concatenate(rows)

    def forward(self, x: Tensor) -> Tensor:
        frames, _, height, width = x.shape
        if frames not in self._index:
            self._index[frames] = asarray(self._shortcut_index(frames).astype(np.int32),
                                          device=x.device)
        y = self.conv(x, add=repeat_channels(x, self._index[frames]))
        c = self.out_dim
        count = 1 + 2 * (frames - 1) if self.time else frames
        out = Tensor.empty((count, c, 2 * height, 2 * width), x.dtype, device=x.device)
        if not self.time:
            _unpack(y, 0, frames, 1, (0, 2 * c, c), out, 0)
            return out
        _unpack(y, 0, 1, 1, (0, 4 * c, 2 * c), out, 0)  # channels (dy, dx, e = 0, c)
        if frames > 1:
            _unpack(y, 1, frames - 1, 2, (4 * c, 2 * c, c), out, 1)
        return out


class Level(nn.Module):
    """A level's residual blocks, then its sampler to `sampler_dim` channels (none where
    None): an Upsample with `up`, else a Downsample. diffusers: `HunyuanVideo15UpBlock3D`,
    `HunyuanVideo15DownBlock3D`."""

    upsamplers: nn.ModuleList
    downsamplers: nn.ModuleList

    def __init__(self, in_dim: int, out_dim: int, count: int, place: Place, *, up: bool,
                 sampler_dim: int | None, time: bool) -> None:
        self.resnets = nn.ModuleList([ResnetBlock(in_dim if i == 0 else out_dim, out_dim, place)
                                      for i in range(count)])
        kind = Upsample if up else Downsample
        samplers = nn.ModuleList([] if sampler_dim is None
                                 else [kind(out_dim, sampler_dim, time, place)])
        self.up = up
        if up:
            self.upsamplers = samplers
        else:
            self.downsamplers = samplers

    def forward(self, x: Tensor) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        for sampler in self.upsamplers if self.up else self.downsamplers:
            x = sampler(x)
        return x
