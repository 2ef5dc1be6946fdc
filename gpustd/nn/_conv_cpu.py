"""conv2d on CPU adapters: shaders/nn/conv2d_cpu.wgsl, a direct convolution shaped for
llvmpipe (eight invocations a vector, every load a gather; bench/NOTES.md, "A direct conv for
CPU adapters")."""

from __future__ import annotations

import math

import numpy as np

from .._tensor import Tensor
from ..gemm.cpu import LANES
from ._util import dummy, kernel
from .prologue import ConvPrologue, no_prologue

_BLOCK = 8  # output channels and pixels an invocation


def conv2d(out: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None, *,
           stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
           groups: int, add: Tensor | None, add_mode: int, prologue: ConvPrologue | None,
           upsample: int, x_start: int, size: tuple[int, int, int]) -> None:
    """conv.conv2d's result into `out` [n, c_out, ho, wo] for the arguments it has checked:
    `size` is (c_in, h, w) as the conv sees them (h, w upsampled), x_start the first of x's
    images it reads."""
    c_in, h, w = size
    n, c_out, ho, wo = out.shape
    cin_g, kh, kw = weight.shape[1:]
    cout_g = c_out // groups
    cpad = -(-cout_g // _BLOCK) * _BLOCK
    layout = _weights(weight, groups, cpad)
    # Three taps an iteration where a row segment serves them: unit dilation and a width of
    # taps in threes; at stride 2 an invocation computes 8 columns at unit stride and keeps
    # every other (the downsamplers' convs: twice the products, one kernel fewer to build).
    step = 3 if kw % 3 == 0 and dilation[1] == 1 and stride[1] <= 2 else 1
    span = _BLOCK // stride[1] if step == 3 else _BLOCK
    row_blocks = -(-wo // span)
    blocks = n * ho * row_blocks
    lanes = math.ceil(blocks / LANES)
    limit = x.device.limits["max-compute-workgroups-per-dimension"]
    z = math.ceil(lanes / limit)
    grid = (math.ceil(lanes / z), groups * (cpad // _BLOCK), z)
    k = kernel("conv2d_cpu", {"T": x.dtype}, parts=("linalg/register_tile",),
               HAS_BIAS=int(bias is not None), ADD=add_mode,
               PROLOGUE=0 if prologue is None else prologue.kind, UP_SHIFT=upsample - 1,
               STEP=step)
    k.dispatch(grid, x, layout, bias if bias is not None else dummy(x),
               add if add is not None else dummy(x), out,
               no_prologue(x) if prologue is None else prologue.table,
               c_in=c_in, h=h, w=w, c_out=c_out, ho=ho, wo=wo, cin_g=cin_g, cout_g=cout_g,
               kh=kh, kw=kw, cpad4=cpad // 4, c_blocks=cpad // _BLOCK, row_blocks=row_blocks,
               rows=n * ho, stride_h=stride[0], stride_w=stride[1], pad_h=padding[0],
               pad_w=padding[1], dil_h=dilation[0], dil_w=dilation[1],
               x_offset=x_start * x.shape[1] * x.shape[2] * x.shape[3], span=span)


def _weights(weight: Tensor, groups: int, cpad: int) -> Tensor:
    """weight [c_out, cin_g, kh, kw] as float32 [c_in, kh, kw, cpad]: each tap's channels of
    a group side by side, so that conv2d_cpu.wgsl reads four of them in one load."""
    c_out, cin_g, kh, kw = weight.shape
    out = Tensor.empty((cin_g * groups * kh * kw * cpad,), np.float32, device=weight.device)
    k = kernel("conv2d_cpu_weights", {"T": weight.dtype})
    k.dispatch((cpad // _BLOCK, cin_g * groups), weight, out, cpad=cpad, taps=kh * kw,
               cin_g=cin_g, cout_g=c_out // groups)
    return out
