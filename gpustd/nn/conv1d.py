"""1-D convolutions (NCL) for audio models (vocoders): conv2d and conv_transpose2d over one
row, the kernel a 1 x K one, so that they share those kernels' plans and tuning."""

from __future__ import annotations

from .._tensor import Tensor
from ._util import check_float
from .conv import conv2d
from .conv_transpose import conv_transpose2d

__all__ = ["conv1d", "conv_transpose1d"]


def _check(op: str, x: Tensor, weight: Tensor) -> None:
    check_float(x, "x", op, ndim=3)
    check_float(weight, "weight", op, ndim=3)


def _row(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], x.shape[1], 1, x.shape[2])


def _unrow(y: Tensor) -> Tensor:
    return y.reshape(y.shape[0], y.shape[1], y.shape[3])


def conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, stride: int = 1,
           padding: int = 0, dilation: int = 1, groups: int = 1, add: Tensor | None = None,
           negative_slope: float | None = None) -> Tensor:
    """Cross-correlation of `x` [N, C_in, L] with `weight` [C_out, C_in / groups, K] plus
    `bias` [C_out] (zero padding), -> [N, C_out, L_out]. add: a tensor of the output's shape
    added after (a residual); negative_slope: leaky_relu on conv + bias before the add
    (conv2d's epilogue). torch: `F.conv1d(x, weight, bias, stride, padding, dilation, groups)`
    (`F.leaky_relu(., negative_slope) + add`)."""
    _check("conv1d", x, weight)
    y = conv2d(_row(x), weight.reshape(*weight.shape[:2], 1, weight.shape[2]), bias,
               stride=(1, stride), padding=(0, padding), dilation=(1, dilation),
               groups=groups, add=None if add is None else _row(add),
               negative_slope=negative_slope)
    return _unrow(y)


def conv_transpose1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, *,
                     stride: int = 1, padding: int = 0, output_padding: int = 0,
                     groups: int = 1) -> Tensor:
    """Transposed convolution of `x` [N, C_in, L] with `weight` [C_in, C_out / groups, K]
    plus `bias` [C_out] -> [N, C_out, (L - 1) * stride - 2 * padding + K + output_padding]
    (padding below K, the stride at most K). torch: `F.conv_transpose1d(x, weight, bias,
    stride, padding, output_padding, groups)`."""
    _check("conv_transpose1d", x, weight)
    y = conv_transpose2d(_row(x), weight.reshape(*weight.shape[:2], 1, weight.shape[2]), bias,
                         stride=(1, stride), padding=(0, padding),
                         output_padding=(0, output_padding), groups=groups)
    return _unrow(y)
