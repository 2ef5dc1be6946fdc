"""2-D convolution (NCHW) as an implicit GEMM: shaders/nn/conv2d.wgsl."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._tensor import Tensor
from ._util import check_float, check_same, dummy, kernel, pair
from .linear import conv1x1

__all__ = ["conv2d"]

# 1x1 convolutions (stride 1, no padding, one group) are plain GEMMs: route them to
# gpustd.linalg's GEMM rather than the implicit GEMM (H200: 0.098 vs 0.141 ms for
# 2x320x64x64 -> 320 in float32, 0.095 vs 0.181 ms in float16; bench/results/nn-h200.json).
ONE_BY_ONE_VIA_LINALG = True
_SMS = 132  # streaming multiprocessors the split-K model assumes (H100/H200; tuned there)
_MAX_SPLITS = 16


def _output_size(size: int, k: int, stride: int, pad: int, dil: int) -> int:
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


def _plan(cout_g: int, pixels: int, groups: int, k_total: int) -> tuple[int, int, int, int]:
    """(BM, BN, splits, BK) for a conv of cout_g channels x pixels x k_total per group.

    A 128 x 128 tile (8 x 8 per invocation, K steps of 16) is the fastest shape measured on
    an H200; smaller tiles only serve outputs narrower than it. Layers with few tiles split
    K: the cost model counts waves of workgroups over the SMs times the K tiles each walks
    (a wave only slightly over the SM count runs at half speed, as measured), plus the
    split-K partial sums' traffic.
    """
    bm = 64 if cout_g <= 64 else 128
    bn = 64 if pixels <= 64 else 128
    bk = 16 if (bm, bn) == (128, 128) else 8
    count = math.ceil(cout_g / bm) * math.ceil(pixels / bn) * groups
    k_tiles = math.ceil(k_total / bk)

    def cost(s: int) -> float:
        waves = math.ceil(count * s / _SMS)
        extra = 0.0 if s == 1 else 2 + s * cout_g * groups * pixels / 1e6
        return waves * math.ceil(k_tiles / s) + extra

    splits = min(range(1, min(_MAX_SPLITS, max(1, k_tiles // 8)) + 1), key=cost)
    return bm, bn, splits, bk


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1,
           _plan_override: tuple[int, int, int, int] | None = None) -> Tensor:
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
    if (ONE_BY_ONE_VIA_LINALG and (kh, kw, sh, sw, ph, pw, groups) == (1, 1, 1, 1, 0, 0, 1)
            and _plan_override is None and x.size and weight.size):
        return conv1x1(x, weight, bias)
    out = Tensor.empty((n, c_out, ho, wo), x.dtype, device=x.device)
    pixels = n * ho * wo
    if out.size == 0 or c_in == 0:
        return out
    cout_g = c_out // groups
    k_total = cin_g * kh * kw
    bm, bn, splits, bk = _plan_override or _plan(cout_g, pixels, groups, k_total)
    k_tiles = math.ceil(k_total / bk)
    per_split = math.ceil(k_tiles / splits)
    splits = math.ceil(k_tiles / per_split)
    has_bias = bias is not None
    params = dict(c_in=c_in, h=h, w=w, c_out=c_out, ho=ho, wo=wo, cin_g=cin_g, cout_g=cout_g,
                  k_total=k_total, pixels=pixels, splits=splits, k_tiles_per_split=per_split,
                  stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw, dil_h=dh, dil_w=dw)
    grid = (math.ceil(pixels / bn), math.ceil(cout_g / bm), groups * splits)
    bias_t = bias if has_bias else dummy(x)
    shape = dict(WY=bm // 8, WX=bn // 8, BK=bk, KH=kh, KW=kw)
    if splits == 1:
        k = kernel("conv2d", {"T": x.dtype, "O": x.dtype}, HAS_BIAS=int(has_bias),
                   **shape)
        k.dispatch(grid, x, weight, bias_t, out, **params)
        return out
    partial = Tensor.empty((splits, out.size), np.float32, device=x.device)
    k = kernel("conv2d", {"T": x.dtype, "O": np.float32}, HAS_BIAS=0, **shape)
    k.dispatch(grid, x, weight, bias_t, partial, **params)
    finish = kernel("conv2d_splitk", {"T": x.dtype}, HAS_BIAS=int(has_bias))
    finish.dispatch(finish.groups_for(out.size), partial, bias_t, out, n=out.size,
                    hw=ho * wo, c_out=c_out, splits=splits)
    return out
