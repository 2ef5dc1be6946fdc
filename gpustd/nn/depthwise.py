"""A depthwise 3x3 convolution with a gated linear unit over it, in one pass: the middle of
GLUMBConv (Sana's, and DC-AE's) feed-forward. A grouped conv2d with one channel a group fills
a 64-row GEMM tile with one row, and the gate then takes two channel slices and a pass more."""

from __future__ import annotations

from typing import Any

from .._tensor import Tensor
from ..quant import materialize
from ._util import check_float, check_same, kernel

__all__ = ["depthwise_glu"]


def depthwise_glu(x: Tensor, weight: Any, bias: Tensor | None, *, silu_input: bool = False
                  ) -> Tensor:
    """x [N, 2C, H, W] through a depthwise 3x3 convolution (zero padding 1, stride 1, weight
    [2C, 1, 3, 3], bias [2C] or None), then the first C channels times SiLU of the last C:
    [N, C, H, W] of x's dtype, float32 sums. `silu_input`: x is read through SiLU first.
    torch: `a, g = F.conv2d(F.silu(x) if silu_input else x, weight, bias, padding=1,
    groups=2C).chunk(2, dim=1); a * F.silu(g)`."""
    op = "depthwise_glu"
    check_float(x, "x", op, ndim=4)
    weight = materialize(weight)
    n, channels, height, width = x.shape
    if channels % 2 or weight.shape != (channels, 1, 3, 3):
        raise ValueError(f"{op}: x {x.shape} needs an even channel count and weight "
                         f"({channels}, 1, 3, 3), got {weight.shape}")
    if bias is None:
        bias = Tensor.zeros((channels,), x.dtype, device=x.device)
    if bias.shape != (channels,):
        raise ValueError(f"{op}: bias must be ({channels},), got {bias.shape}")
    check_same(op, x, weight=weight, bias=bias)
    out = Tensor.empty((n, channels // 2, height, width), x.dtype, device=x.device)
    if out.size == 0:
        return out
    k = kernel("depthwise_glu", {"T": x.dtype}, SILU_IN=int(silu_input))
    k.dispatch(k.groups_for(out.size), x, weight, bias, out, n=out.size, c=channels // 2,
               h=height, w=width)
    return out
