"""HunyuanVideo's VAE blocks (diffusers' autoencoder_kl_hunyuan_video names): the causal 3D
convolution padded by replication, the residual block, the mid block's attention over all
frames, and the down- and up-samplers. A video is frame-major, (T, C, H, W), so that each
temporal tap of a convolution is a 2D convolution over the frames as its batch; the group
norms take their statistics over all frames, as torch's GroupNorm over (1, C, T, H, W).

Unlike Wan's VAE (wan_vae_blocks) nothing runs chunk by chunk: a clip (or a tile of one,
hunyuan_video_vae_tiling) goes through each layer whole, its first frame replicated in
front of it where Wan pads with zeros."""

from __future__ import annotations

import math
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from gpustd import Tensor, asarray, concatenate, nn, permute, take_slice
from gpustd.gather import gather

from .layers import Attention, Place

__all__ = ["CausalConv3d", "Conv3d", "MidBlock", "ResnetBlock", "Sampler", "TapState",
           "frames_norm"]

_EPS = 1e-6


def frames_norm(norm: nn.GroupNorm, x: Tensor, *, silu: bool = False) -> Tensor:
    """GroupNorm (+ SiLU) of frames (T, C, H, W) with statistics over all T frames, returned
    channel-major (C, T, H, W). torch: `F.group_norm(x[None], ...)` of diffusers' layout."""
    frames, channels, height, width = x.shape
    video = permute(x, (1, 0, 2, 3)).reshape(1, channels, frames * height * width)
    return norm(video, silu=silu).reshape(channels, frames, height, width)


class Conv3d(nn.Module):
    """An nn.Conv3d's (out, in, k, k, k) kernel and bias (a causal convolution's `.conv`): a
    1x1x1 one held as its `weight` (as a layer, over frames (T, in, H, W): quant_conv), a
    larger one as its k temporal taps, `taps.t.weight` (out, in, k, k) = weight[:, :, t], cut
    once as the weights load (TapState) rather than on every call. torch: nn.Conv3d."""

    weight: Tensor
    taps: nn.ModuleList

    def __init__(self, in_dim: int, out_dim: int, kernel: int, place: Place) -> None:
        if kernel == 1:
            self.weight = nn.parameter((out_dim, in_dim, 1, 1, 1), **place)
        else:
            self.taps = nn.ModuleList([nn.Namespace() for _ in range(kernel)])
            for tap in self.taps:
                tap.weight = nn.parameter((out_dim, in_dim, kernel, kernel), **place)
        self.bias = nn.parameter((out_dim,), **place)

    def kernels(self) -> list[Tensor]:
        """The (out, in, k, k) kernel of each temporal tap, in order."""
        if hasattr(self, "taps"):
            return [tap.weight for tap in self.taps]
        out_dim, in_dim = self.weight.shape[:2]
        return [self.weight.reshape(out_dim, in_dim, 1, 1)]

    def forward(self, x: Tensor) -> Tensor:
        return nn.conv2d(x, self.kernels()[0], self.bias)


class TapState(Mapping[str, Any]):
    """A diffusers state dict (or a loader's lazy mapping) with each (out, in, k, k, k)
    kernel, k > 1, seen as the k taps `....taps.t.weight` = kernel[:, :, t] that Conv3d holds
    in its place (`....weight`); one kernel is read at a time, kept for its next taps."""

    def __init__(self, state: Mapping[str, Any]) -> None:
        self._state = state
        shape_of = getattr(state, "shape", None)
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._sources: dict[str, tuple[str, int]] = {}  # tap key -> (kernel key, tap)
        for key in state:
            shape = tuple(shape_of(key)) if callable(shape_of) else np.shape(state[key])
            if not (key.endswith(".weight") and len(shape) == 5 and shape[2] > 1):
                self._shapes[key] = shape
                continue
            for t in range(shape[2]):
                tap = f"{key[:-len('weight')]}taps.{t}.weight"
                self._shapes[tap], self._sources[tap] = (*shape[:2], *shape[3:]), (key, t)
        self._read: tuple[str, np.ndarray] | None = None

    def __iter__(self) -> Iterator[str]:
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)

    def __contains__(self, key: object) -> bool:
        return key in self._shapes  # Mapping's own would read the tensor

    def __getitem__(self, key: str) -> Any:
        if key not in self._sources:
            return self._state[key]
        source, t = self._sources[key]
        if self._read is None or self._read[0] != source:
            self._read = source, np.asarray(self._state[source])
        return np.ascontiguousarray(self._read[1][:, :, t])

    def shape(self, key: str) -> tuple[int, ...]:
        return self._shapes[key]


class CausalConv3d(nn.Module):
    """diffusers' `HunyuanVideoCausalConv3d`: a cubic kernel k after replicate padding, k // 2
    pixels on each side and k - 1 copies of the first frame in front, with a stride (st, s, s)
    in (time, height, width)."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int, place: Place, *,
                 stride: tuple[int, int] = (1, 1), padding_mode: str = "replicate") -> None:
        self.conv = Conv3d(in_dim, out_dim, kernel, place)
        self.stride = stride
        self.padding_mode = padding_mode  # in space: "replicate", "reflect" or "zeros"
        self._orders: dict[tuple[int, ...], Tensor] = {}  # frame orders on the device

    def _frames(self, x: Tensor, order: list[int], axis: int, back: int) -> Tensor:
        """x's frames (along `axis`) in `order`: the first ones repeated in front (and the
        last `back` times behind) by the replicate pad kernel where that is all it is, else
        gathered (the order uploaded once, kept for the next call: an upload waits for the
        queue)."""
        count = x.shape[axis]
        front = len(order) - count - back
        if order == [0] * front + list(range(count)) + [count - 1] * back:
            if not front + back:
                return x
            shape = x.shape
            rows = x.reshape(math.prod(shape[:axis]), count, math.prod(shape[axis + 1:]))
            padded = nn.pad(rows, (0, 0, front, back), mode="replicate")
            return padded.reshape(*shape[:axis], count + front + back, *shape[axis + 1:])
        key = tuple(order)
        if key not in self._orders:
            self._orders[key] = asarray(np.asarray(order, np.int32), device=x.device)
        return gather(x, self._orders[key], axis)  # valid indices: no check to read back

    def forward(self, x: Tensor, *, channel_major: bool = False, add: Tensor | None = None,
                frames: Sequence[int] | None = None, upsample: bool = False,
                causal: bool = True) -> Tensor:
        """x: (T, in, H, W) frames, or (in, T, H, W) with `channel_major` (a frames_norm's
        output) -> (T', out, H', W'). `frames`: which of x's frames the convolution reads,
        before the k - 1 copies of the first (default all, in order: the up-sampler's
        doubled frames otherwise); not `causal`: (k - 1) // 2 copies of the first in front
        and as many of the last behind (LTX-2's decoder, `causal=False`); `upsample` reads
        every frame 2x nearest-upsampled; `add` (the output's shape) is added to the
        result."""
        kernels = self.conv.kernels()
        kt, (kh, kw) = len(kernels), kernels[0].shape[2:]
        step, spatial = self.stride
        axis = 1 if channel_major else 0
        count = x.shape[axis] if frames is None else len(frames)
        read = list(range(count)) if frames is None else list(frames)
        back = 0 if causal else (kt - 1) // 2
        padded = [0] * (kt - 1 - back) + read + read[-1:] * back
        outputs = (len(padded) - kt) // step + 1
        # each tap's frames side by side, so that every tap reads a run of them in place
        taps = ([padded] if step == 1 else
                [padded[t: t + step * outputs: step] for t in range(kt)])
        x = self._frames(x, [i for tap in taps for i in tap], axis, back)
        if channel_major:
            x = permute(x, (1, 0, 2, 3))
        if upsample:
            x = nn.upsample_nearest2x(x)
        zeros = self.padding_mode == "zeros"
        if kh > 1 and not zeros:
            x = nn.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode=self.padding_mode)
        out = add
        for t in range(kt):
            start = t if step == 1 else t * outputs
            out = nn.conv2d(x, kernels[t], self.conv.bias if t == 0 else None, stride=spatial,
                            padding=(kh // 2, kw // 2) if zeros else 0, add=out,
                            images=(start, outputs))
        return typing.cast(Tensor, out)


class ResnetBlock(nn.Module):
    """norm1, SiLU, conv1, norm2, SiLU, conv2, plus the input (through a 1x1x1 conv_shortcut
    where the channels change). diffusers: `HunyuanVideoResnetBlockCausal3D`."""

    def __init__(self, in_dim: int, out_dim: int, groups: int, place: Place) -> None:
        self.norm1 = nn.GroupNorm(groups, in_dim, eps=_EPS, **place)
        self.conv1 = CausalConv3d(in_dim, out_dim, 3, place)
        self.norm2 = nn.GroupNorm(groups, out_dim, eps=_EPS, **place)
        self.conv2 = CausalConv3d(out_dim, out_dim, 3, place)
        self.conv_shortcut = (CausalConv3d(in_dim, out_dim, 1, place) if in_dim != out_dim
                              else None)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        h = self.conv1(frames_norm(self.norm1, x, silu=True), channel_major=True)
        return self.conv2(frames_norm(self.norm2, h, silu=True), channel_major=True,
                          add=shortcut)


def _attention(dim: int, groups: int, place: Place) -> Attention:
    """One head over all `dim` channels, with its group_norm beside to_q, as diffusers'."""
    attn = Attention(dim, 1, dim, qkv_bias=True, place=place)
    attn.group_norm = nn.GroupNorm(groups, dim, eps=_EPS, **place)
    return attn


def _attend(attn: Attention, x: Tensor) -> Tensor:
    """x plus attention over the tokens of all frames (T, C, H, W), each pixel seeing the
    pixels of its own frame and the frames before (diffusers' `prepare_causal_attention_mask`):
    the keys of frame t's queries are the first (t + 1) H W tokens, one attention a frame."""
    frames, channels, height, width = x.shape
    pixels = height * width
    normed = frames_norm(attn.group_norm, x).reshape(channels, frames * pixels)
    tokens = permute(normed, (1, 0)).reshape(1, frames * pixels, channels)
    q, k, v = nn.Linear.each(tokens, [attn.to_q, attn.to_k, attn.to_v])
    out = [nn.attention(take_slice(q, t * pixels, (t + 1) * pixels, axis=1),
                        take_slice(k, 0, (t + 1) * pixels, axis=1),
                        take_slice(v, 0, (t + 1) * pixels, axis=1), heads=1)
           for t in range(frames)]
    residual = permute(x.reshape(frames, channels, pixels), (0, 2, 1))
    mixed = attn.to_out[0](concatenate(out, axis=1) if frames > 1 else out[0],
                           add_to=residual.reshape(1, frames * pixels, channels))
    return permute(mixed.reshape(frames, pixels, channels), (0, 2, 1)).reshape(x.shape)


class MidBlock(nn.Module):
    """Residual block, causal attention over all frames, residual block.
    diffusers: `HunyuanVideoMidBlock3D` (one layer; its attention optional)."""

    def __init__(self, dim: int, groups: int, place: Place, *, attention: bool) -> None:
        self.resnets = nn.ModuleList([ResnetBlock(dim, dim, groups, place) for _ in range(2)])
        self.attentions = nn.ModuleList([_attention(dim, groups, place)] if attention else [])

    def forward(self, x: Tensor) -> Tensor:
        x = self.resnets[0](x)
        if len(self.attentions):
            x = _attend(self.attentions[0], x)
        return self.resnets[1](x)


class Sampler(nn.Module):
    """A level's residual blocks, then its sampler: going down a stride-(st, s, s) causal
    convolution (`HunyuanVideoDownsampleCausal3D`), going up the frames nearest-upsampled
    (the first in space only, the others in time too where `time`) and a causal convolution
    (`HunyuanVideoUpsampleCausal3D`). diffusers: `HunyuanVideoDownBlock3D` / `UpBlock3D`."""

    upsamplers: nn.ModuleList
    downsamplers: nn.ModuleList

    def __init__(self, in_dim: int, out_dim: int, count: int, groups: int, place: Place, *,
                 up: bool, time: bool, space: bool) -> None:
        self.resnets = nn.ModuleList([ResnetBlock(in_dim if i == 0 else out_dim, out_dim,
                                                  groups, place) for i in range(count)])
        self.up, self.time, self.space = up, time, space
        # diffusers' sampler module holds its causal conv as `.conv`: `upsamplers.0.conv.conv`
        sampler = nn.Namespace()
        stride = (1, 1) if up else (2 if time else 1, 2 if space else 1)
        sampler.conv = CausalConv3d(out_dim, out_dim, 3, place, stride=stride)
        samplers = nn.ModuleList([sampler] if time or space else [])
        if up:
            self.upsamplers = samplers
        else:
            self.downsamplers = samplers

    def forward(self, x: Tensor) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        samplers = self.upsamplers if self.up else self.downsamplers
        if not len(samplers):
            return x
        conv: CausalConv3d = samplers[0].conv
        if not self.up:
            return conv(x)
        later = range(1, x.shape[0])
        frames = [0] + ([i for i in later for _ in range(2)] if self.time else list(later))
        return conv(x, frames=frames, upsample=self.space)
