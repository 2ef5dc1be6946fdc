"""Linear layers on gpustd.linalg's GEMM (bias fused in its epilogue)."""

from __future__ import annotations

from .. import linalg
from .._tensor import Tensor
from ._util import check_float, check_same, kernel

__all__ = ["conv1x1", "linear"]


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x [..., in] @ weight.T + bias, with weight [out, in] as stored in checkpoints.

    float32 or float16 (float32 accumulation). torch: `F.linear(x, weight, bias)`.
    """
    op = "linear"
    check_float(x, "x", op)
    check_float(weight, "weight", op, ndim=2)
    check_same(op, x, weight=weight, bias=bias)
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"{op}: x {x.shape} has {x.shape[-1] if x.ndim else 0} features but "
                         f"weight {weight.shape} takes {weight.shape[1]}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"{op}: bias must have shape ({weight.shape[0]},), got {bias.shape}")
    rows = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
    out = linalg.matmul(rows, weight, trans_b=True, bias=bias)
    return out.reshape(*x.shape[:-1], weight.shape[0])


def conv1x1(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """A 1x1 convolution (stride 1, no padding, one group) of NCHW x as a batched GEMM:
    out[n] = weight[:, :, 0, 0] @ x[n].reshape(C_in, H*W), then the per-channel bias.

    Shapes and dtypes as conv2d (checked there). torch: `F.conv2d(x, weight, bias)`.
    """
    n, c_in, h, w = x.shape
    c_out = weight.shape[0]
    out = linalg.matmul(weight.reshape(c_out, c_in), x.reshape(n, c_in, h * w))
    if bias is not None:
        k = kernel("channel_bias", {"T": x.dtype})
        k.dispatch(k.groups_for(out.size), bias, out, n=out.size, hw=h * w, c=c_out)
    return out.reshape(n, c_out, h, w)
