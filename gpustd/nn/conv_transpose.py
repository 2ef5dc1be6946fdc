"""Transposed 2-D convolution (the gradient of conv2d, an upsampling layer), as `stride` x
`stride` ordinary convolutions: each output phase (the output pixels at one offset modulo the
stride) is a cross-correlation of the input with the kernel taps that reach it, turned round,
so no multiply is spent on the zeros a transposed conv would insert."""

from __future__ import annotations

import math
from typing import Any

from .._tensor import Tensor
from ..shape import permute
from ._util import check_float, check_same, pair
from .conv import conv2d
from .spatial import pad

__all__ = ["conv_transpose2d"]


def _phase(size_in: int, size_out: int, kernel: int, stride: int, padding: int,
           phase: int) -> tuple[int, int, int, int]:
    """For output positions phase, phase + stride, ...: (first tap, taps, input padding
    before, after) of the correlation that makes them."""
    first = (phase + padding) % stride
    taps = max(0, math.ceil((kernel - first) / stride))
    count = len(range(phase, size_out, stride))
    before = taps - 1 - (phase + padding) // stride
    return first, taps, before, count + taps - 1 - size_in - before


def conv_transpose2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, *,
                     stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                     groups: int = 1) -> Tensor:
    """Transposed convolution of NCHW `x` with `weight` [in, out / groups, kh, kw] plus `bias`
    [out].

    Output side (H - 1) * stride - 2 * padding + kh + output_padding (padding at most kh - 1,
    output_padding below the stride, the kernel at least the stride). groups: the channels
    in `groups` independent slices (groups = in = out: one filter per channel). torch:
    `F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups)`.
    """
    op = "conv_transpose2d"
    check_float(x, "x", op, ndim=4)
    check_float(weight, "weight", op, ndim=4)
    check_same(op, x, weight=weight, bias=bias)
    sh, sw = pair(stride, "stride", op, minimum=1)
    ph, pw = pair(padding, "padding", op)
    oh, ow = pair(output_padding, "output_padding", op)
    n, c_in, h, w = x.shape
    if weight.shape[0] != c_in:
        raise ValueError(f"{op}: x has {c_in} channels but weight {weight.shape} reads "
                         f"{weight.shape[0]}")
    if not isinstance(groups, int) or groups < 1 or c_in % groups:
        raise ValueError(f"{op}: groups must be a positive int dividing x's {c_in} channels, "
                         f"got {groups!r}")
    in_g, out_g = c_in // groups, weight.shape[1]
    kh, kw = weight.shape[2:]
    if not (ph < kh and pw < kw and oh < sh and ow < sw and sh <= kh and sw <= kw):
        raise ValueError(f"{op}: padding ({ph}, {pw}) must be below the kernel {kh}x{kw}, "
                         f"output_padding ({oh}, {ow}) below the stride ({sh}, {sw}) and the "
                         "stride at most the kernel")
    height, width = (h - 1) * sh - 2 * ph + kh + oh, (w - 1) * sw - 2 * pw + kw + ow
    out = Tensor.empty((n, out_g * groups, height, width), x.dtype, device=x.device)
    for row in range(min(sh, height)):
        first_y, taps_y, top, bottom = _phase(h, height, kh, sh, ph, row)
        for col in range(min(sw, width)):
            first_x, taps_x, left, right = _phase(w, width, kw, sw, pw, col)
            # the phase's taps, last first (a correlation of what the transposed conv spreads)
            taps = weight[:, :, first_y + sh * (taps_y - 1)::-sh,
                          first_x + sw * (taps_x - 1)::-sw]
            framed = pad(x, (left, right, top, bottom)) if (left, right, top, bottom) != (
                0, 0, 0, 0) else x
            # [in, out/g, th, tw] -> conv2d's [out, in/g, th, tw], group by group
            grouped = taps.reshape(groups, in_g, out_g, *taps.shape[2:])
            kernel = permute(grouped, (0, 2, 1, 3, 4)).reshape(groups * out_g, in_g,
                                                               *taps.shape[2:])
            out[:, :, row::sh, col::sw] = conv2d(framed, kernel, bias, groups=groups)
    return out
