"""Transposed 2-D convolution (the gradient of conv2d, an upsampling layer): zeros between
the input's pixels, then conv2d with the kernel turned round."""

from __future__ import annotations

from typing import Any

from .._tensor import Tensor
from ..shape import permute
from ._util import check_float, check_same, pair
from .conv import conv2d

__all__ = ["conv_transpose2d"]


def conv_transpose2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, *,
                     stride: Any = 1, padding: Any = 0, output_padding: Any = 0) -> Tensor:
    """Transposed convolution of NCHW `x` with `weight` [in, out, kh, kw] plus `bias` [out].

    Output side (H - 1) * stride - 2 * padding + kh + output_padding (padding at most kh - 1,
    output_padding below stride). Each input pixel is placed `stride` apart among zeros
    (output_padding more zeros at the bottom and right) and the flipped kernel slid over them
    with kh - 1 - padding zeros around: one conv2d. torch: `F.conv_transpose2d(x, weight,
    bias, stride, padding, output_padding)`.
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
    kh, kw = weight.shape[2:]
    if not (ph < kh and pw < kw and oh < sh and ow < sw):
        raise ValueError(f"{op}: padding ({ph}, {pw}) must be below the kernel {kh}x{kw} and "
                         f"output_padding ({oh}, {ow}) below the stride ({sh}, {sw})")
    spread = Tensor.zeros((n, c_in, (h - 1) * sh + 1 + oh, (w - 1) * sw + 1 + ow), x.dtype,
                          device=x.device)
    spread[:, :, ::sh, ::sw] = x
    turned = permute(weight[:, :, ::-1, ::-1], (1, 0, 2, 3))
    return conv2d(spread, turned, bias, padding=(kh - 1 - ph, kw - 1 - pw))
