"""Wan Animate's face-motion encoders (diffusers' transformer_wan_animate names): the motion
encoder, a StyleGAN-style discriminator body (equalised-learning-rate convs, FIR blur before
each stride-2 conv, fused leaky ReLU) that reads one face crop into a motion vector, and the
face encoder, causal 1-D convs over the frames that turn the motion vectors into the face
tokens the face blocks attend to (models.wan_animate)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from gpustd import Tensor, asarray, concatenate, nn, permute, take_slice

from .layers import Place

__all__ = ["MotionConv2d", "MotionEncoderResBlock", "MotionLinear", "WanAnimateFaceEncoder",
           "WanAnimateMotionEncoder", "motion_channels"]

# diffusers' WAN_ANIMATE_MOTION_ENCODER_CHANNEL_SIZES: the width at each resolution
_CHANNELS = {"4": 512, "8": 512, "16": 512, "32": 512, "64": 256, "128": 128, "256": 64,
             "512": 32, "1024": 16}
_SLOPE, _GAIN = 0.2, math.sqrt(2.0)  # FusedLeakyReLU's


def motion_channels(size: int, channels: dict[str, int] | None) -> list[int]:
    """The motion encoder's widths from `size` down to 4 pixels (one per resolution)."""
    table = {str(k): int(v) for k, v in (channels or _CHANNELS).items()}
    if size < 4 or size & (size - 1):
        raise ValueError(f"motion_encoder_size {size} must be a power of two >= 4; fix the "
                         "transformer's config")
    sizes = [str(2 ** i) for i in range(int(math.log2(size)), 1, -1)]
    missing = [s for s in sizes if s not in table]
    if missing:
        raise ValueError(f"motion_encoder_channel_sizes has no width for {missing}; fix the "
                         "transformer's config")
    return [table[s] for s in sizes]


class _Bias(nn.Module):
    """FusedLeakyReLU's channel bias (`act_fn.bias`)."""

    def __init__(self, channels: int, place: Place) -> None:
        self.bias = nn.parameter((channels,), **place)


class MotionConv2d(nn.Module):
    """An equalised-lr conv (weight times 1 / sqrt(fan_in)), optionally after a FIR blur (a
    depthwise conv with the normalised outer product of `blur`) and before FusedLeakyReLU
    (bias, leaky ReLU 0.2, times sqrt 2). diffusers: `MotionConv2d`."""

    def __init__(self, c_in: int, c_out: int, kernel: int, place: Place, *, stride: int = 1,
                 padding: int = 0, bias: bool = True, blur: tuple[int, ...] | None = None,
                 activation: bool = True) -> None:
        self.weight = nn.parameter((c_out, c_in, kernel, kernel), **place)
        self.scale, self.stride, self.padding = 1 / math.sqrt(c_in * kernel ** 2), stride, padding
        self.bias = nn.parameter((c_out,), **place) if bias and not activation else None
        self.act_fn = _Bias(c_out, place) if activation else None
        self._blur: Tensor | None = None  # a constant, not a parameter (the leading _)
        if blur is not None:
            taps = np.asarray(blur, np.float64)
            kernel2d = np.outer(taps, taps) / np.outer(taps, taps).sum()
            self._blur = asarray(np.tile(kernel2d, (c_in, 1, 1, 1)), dtype=place["dtype"],
                                 device=place["device"])
            # diffusers pads (p + 1) // 2 rows and p // 2 columns on both sides
            p = len(blur) - stride + kernel - 1
            self._blur_padding = ((p + 1) // 2, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        if self._blur is not None:
            x = nn.conv2d(x, self._blur, padding=self._blur_padding, groups=x.shape[1])
        weight = self.weight * self.scale
        if self.act_fn is None:
            return nn.conv2d(x, weight, self.bias, stride=self.stride, padding=self.padding)
        return nn.conv2d(x, weight, self.act_fn.bias, stride=self.stride, padding=self.padding,
                         negative_slope=_SLOPE, scale=_GAIN)


class MotionLinear(nn.Module):
    """An equalised-lr linear (weight times 1 / sqrt(in_dim)) with a bias, no activation (as
    the motion encoder uses them). diffusers: `MotionLinear(in_dim, out_dim)`."""

    def __init__(self, in_dim: int, out_dim: int, place: Place) -> None:
        self.weight = nn.parameter((out_dim, in_dim), **place)
        self.bias = nn.parameter((out_dim,), **place)
        self.scale = 1 / math.sqrt(in_dim)

    def forward(self, x: Tensor) -> Tensor:
        return nn.linear(x, self.weight * self.scale, self.bias)


class MotionEncoderResBlock(nn.Module):
    """conv1 (3x3, activation), conv2 (blur, 3x3 stride 2, activation), plus conv_skip
    (blur, 1x1 stride 2, no bias) of the input, the sum over sqrt 2. diffusers:
    `MotionEncoderResBlock`."""

    def __init__(self, c_in: int, c_out: int, place: Place) -> None:
        blur = (1, 3, 3, 1)
        self.conv1 = MotionConv2d(c_in, c_in, 3, place, padding=1)
        self.conv2 = MotionConv2d(c_in, c_out, 3, place, stride=2, blur=blur)
        self.conv_skip = MotionConv2d(c_in, c_out, 1, place, stride=2, bias=False, blur=blur,
                                      activation=False)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.conv_skip(x)) * (1 / math.sqrt(2.0))


class WanAnimateMotionEncoder(nn.Module):
    """Face crops (N, 3, size, size) -> motion vectors (N, out_dim): conv_in, res blocks down
    to 4 x 4, conv_out (4x4) to style_dim, the motion_network linears to motion_dim
    coefficients, and their combination of the orthonormal directions (QR of
    motion_synthesis_weight). diffusers: `WanAnimateMotionEncoder`."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        self.size = int(cfg["motion_encoder_size"])
        widths = motion_channels(self.size, cfg["motion_encoder_channel_sizes"])
        style, motion = cfg["motion_style_dim"], cfg["motion_dim"]
        self.conv_in = MotionConv2d(3, widths[0], 1, place)
        self.res_blocks = nn.ModuleList([MotionEncoderResBlock(a, b, place)
                                         for a, b in itertools.pairwise(widths)])
        self.conv_out = MotionConv2d(widths[-1], style, 4, place, bias=False, activation=False)
        self.motion_network = nn.ModuleList(
            [MotionLinear(style, style, place) for _ in range(4)]
            + [MotionLinear(style, motion, place)])
        self.motion_synthesis_weight = nn.parameter((cfg["motion_encoder_dim"], motion), **place)

    def directions(self) -> Tensor:
        """Q (out_dim, motion_dim) of the QR of motion_synthesis_weight + 1e-8, computed on
        the host in float64 (diffusers: `torch.linalg.qr` in float32; LAPACK's Householder
        signs either way)."""
        weight = self.motion_synthesis_weight.numpy().astype(np.float32) + np.float32(1e-8)
        q = np.linalg.qr(weight.astype(np.float64))[0]
        return asarray(q, dtype=self.motion_synthesis_weight.dtype,
                       device=self.motion_synthesis_weight.device)

    def forward(self, faces: Tensor, directions: Tensor | None = None) -> Tensor:
        x = self.conv_in(faces)
        for block in self.res_blocks:
            x = block(x)
        x = self.conv_out(x).reshape(faces.shape[0], -1)
        for linear in self.motion_network:
            x = linear(x)
        # sum_j alpha_j Q[:, j]: diffusers' diag_embed(alpha) @ Q.T summed over the rows
        return nn.linear(x, self.directions() if directions is None else directions)


class _Conv1d(nn.Module):
    """Conv1d parameters (weight (out, in, k), bias), run by `_causal_conv`."""

    def __init__(self, c_in: int, c_out: int, kernel: int, place: Place) -> None:
        self.weight = nn.parameter((c_out, c_in, kernel), **place)
        self.bias = nn.parameter((c_out,), **place)


def _causal_conv(x: Tensor, conv: _Conv1d, stride: int) -> Tensor:
    """x (B, T, C) -> (B, T', C_out): a Conv1d over the frames after repeating the first frame
    kernel - 1 times (diffusers: `F.pad(x, (k - 1, 0), mode="replicate")`, then `Conv1d`),
    as a conv2d of one row."""
    kernel = conv.weight.shape[2]
    first = take_slice(x, 0, 1, axis=1)
    padded = concatenate([first] * (kernel - 1) + [x], axis=1)
    rows = permute(padded, (0, 2, 1)).reshape(x.shape[0], x.shape[2], 1, -1)
    weight = conv.weight.reshape(conv.weight.shape[0], x.shape[2], 1, kernel)
    out = nn.conv2d(rows, weight, conv.bias, stride=(1, stride))
    return permute(out.reshape(out.shape[0], out.shape[1], -1), (0, 2, 1))


class WanAnimateFaceEncoder(nn.Module):
    """Motion vectors (B, T, in_dim) -> face tokens (B, T', heads + 1, out_dim), T' = T
    halved twice (rounding up): conv1_local to `heads` sequences of hidden_dim, then per
    head conv2 and conv3 (stride 2), each causal and followed by a LayerNorm (no affine) and
    SiLU; out_proj; a learned padding token appended to each frame's heads. diffusers:
    `WanAnimateFaceEncoder`."""

    def __init__(self, cfg: dict[str, Any], dim: int, place: Place) -> None:
        hidden, self.heads = cfg["face_encoder_hidden_dim"], cfg["face_encoder_num_heads"]
        self.eps = 1e-6
        self.conv1_local = _Conv1d(cfg["motion_encoder_dim"], hidden * self.heads, 3, place)
        self.conv2 = _Conv1d(hidden, hidden, 3, place)
        self.conv3 = _Conv1d(hidden, hidden, 3, place)
        self.out_proj = nn.Linear(hidden, dim, **place)
        self.padding_tokens = nn.parameter((1, 1, 1, dim), **place)

    def _norm_silu(self, x: Tensor) -> Tensor:
        return nn.silu(nn.layer_norm(x, None, None, eps=self.eps))

    def forward(self, motion: Tensor) -> Tensor:
        batch, frames, _ = motion.shape
        x = _causal_conv(motion, self.conv1_local, 1)  # (B, T, heads * hidden)
        # each head its own sequence: (B, T, heads, hidden) -> (B * heads, T, hidden)
        x = permute(x.reshape(batch, frames, self.heads, -1), (0, 2, 1, 3))
        x = self._norm_silu(x.reshape(batch * self.heads, frames, -1))
        x = self._norm_silu(_causal_conv(x, self.conv2, 2))
        x = self._norm_silu(_causal_conv(x, self.conv3, 2))
        x = self.out_proj(x)
        x = permute(x.reshape(batch, self.heads, x.shape[1], -1), (0, 2, 1, 3))
        pad = self.padding_tokens.reshape(1, 1, 1, -1)
        pads = concatenate([pad] * (batch * x.shape[1]), axis=0).reshape(
            batch, x.shape[1], 1, -1)
        return concatenate([x, pads], axis=2)
