"""2-D convolution (NCHW) as an implicit GEMM: shaders/nn/conv2d.wgsl."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._tensor import Tensor
from ._util import check_float, check_same, dummy, kernel, pair

__all__ = ["conv2d"]

# (TM, TN) per invocation, largest tile first: a workgroup owns 16*TM channels x 16*TN pixels.
_TILES = ((8, 8), (8, 4), (4, 8), (4, 4))
_TARGET_WORKGROUPS = 264  # about two per SM on a large GPU; smaller tiles below that
_MIN_SPLIT_TILES = 24  # K tiles (of 8) each split-K slice keeps, so slices stay worth it
_BK = 8


def _output_size(size: int, k: int, stride: int, pad: int, dil: int) -> int:
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


def _plan(cout_g: int, pixels: int, groups: int, k_total: int) -> tuple[int, int, int]:
    """(TM, TN, splits): the largest tile giving enough workgroups, then split-K if the
    output is still too small to occupy the GPU."""
    def count(tm: int, tn: int) -> int:
        return math.ceil(cout_g / (16 * tm)) * math.ceil(pixels / (16 * tn)) * groups

    def waste(tm: int, tn: int) -> float:
        m, n = 16 * tm, 16 * tn
        return 1 - cout_g * pixels / (math.ceil(cout_g / m) * m * math.ceil(pixels / n) * n)

    for tm, tn in _TILES:
        if count(tm, tn) >= _TARGET_WORKGROUPS and waste(tm, tn) < 0.2:
            return tm, tn, 1
    tm, tn = _TILES[-1]
    k_tiles = math.ceil(k_total / _BK)
    splits = min(_TARGET_WORKGROUPS // max(count(tm, tn), 1), k_tiles // _MIN_SPLIT_TILES, 16)
    return tm, tn, max(splits, 1)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1,
           _plan_override: tuple[int, int, int] | None = None) -> Tensor:
    """2-D cross-correlation of NCHW `x` with `weight` [out, in/groups, kh, kw] plus `bias`.

    x: [N, C_in, H, W] float32/float16; weight and bias of the same dtype; stride, padding
    and dilation are ints or (h, w) pairs (zero padding). Returns [N, C_out, H_out, W_out].
    Accumulates in float32. torch: `torch.nn.functional.conv2d(x, weight, bias, stride,
    padding, dilation, groups)`.
    """
    op = "conv2d"
    check_float(x, "x", op, ndim=4)
    check_float(weight, "weight", op, ndim=4)
    check_same(op, x, weight=weight, bias=bias)
    sh, sw = pair(stride, "stride", op, minimum=1)
    ph, pw = pair(padding, "padding", op)
    dh, dw = pair(dilation, "dilation", op, minimum=1)
    n, c_in, h, w = x.shape
    c_out, cin_g, kh, kw = weight.shape
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    if c_in != cin_g * groups:
        raise ValueError(f"{op}: x has {c_in} channels but weight {weight.shape} with "
                         f"groups={groups} expects {cin_g * groups}")
    if c_out % groups:
        raise ValueError(f"{op}: {c_out} output channels are not divisible by groups={groups}")
    if bias is not None and bias.shape != (c_out,):
        raise ValueError(f"{op}: bias must have shape ({c_out},), got {bias.shape}")
    ho = _output_size(h, kh, sh, ph, dh)
    wo = _output_size(w, kw, sw, pw, dw)
    if ho < 1 or wo < 1 or kh < 1 or kw < 1:
        raise ValueError(f"{op}: kernel {kh}x{kw} (dilation {dh}x{dw}) does not fit the "
                         f"padded input {h + 2 * ph}x{w + 2 * pw}")
    out = Tensor.empty((n, c_out, ho, wo), x.dtype, device=x.device)
    pixels = n * ho * wo
    if out.size == 0 or c_in == 0:
        return out
    cout_g = c_out // groups
    k_total = cin_g * kh * kw
    tm, tn, splits = _plan_override or _plan(cout_g, pixels, groups, k_total)
    k_tiles = math.ceil(k_total / _BK)
    per_split = math.ceil(k_tiles / splits)
    splits = math.ceil(k_tiles / per_split)
    has_bias = bias is not None
    params = dict(c_in=c_in, h=h, w=w, c_out=c_out, ho=ho, wo=wo, cin_g=cin_g, cout_g=cout_g,
                  k_total=k_total, pixels=pixels, k_tiles_per_split=per_split,
                  stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw, dil_h=dh, dil_w=dw)
    grid = (math.ceil(pixels / (16 * tn)), math.ceil(cout_g / (16 * tm)), groups * splits)
    bias_t = bias if has_bias else dummy(x)
    if splits == 1:
        k = kernel("conv2d", {"T": x.dtype, "O": x.dtype}, TM=tm, TN=tn, KH=kh, KW=kw,
                   HAS_BIAS=int(has_bias), SPLITS=1)
        k.dispatch(grid, x, weight, bias_t, out, **params)
        return out
    partial = Tensor.empty((splits, out.size), np.float32, device=x.device)
    k = kernel("conv2d", {"T": x.dtype, "O": np.float32}, TM=tm, TN=tn, KH=kh, KW=kw,
               HAS_BIAS=0, SPLITS=splits)
    k.dispatch(grid, x, weight, bias_t, partial, **params)
    finish = kernel("conv2d_splitk", {"T": x.dtype}, HAS_BIAS=int(has_bias))
    finish.dispatch(finish.groups_for(out.size), partial, bias_t, out, n=out.size,
                    hw=ho * wo, c_out=c_out, splits=splits)
    return out
