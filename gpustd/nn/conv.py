"""2-D convolution (NCHW) as an implicit GEMM: shaders/nn/conv2d.wgsl."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Kernel

from .._tensor import Tensor
from ..elementwise import maximum
from ..gemm.plan import MULTIPROCESSORS
from ..shape import take_slice
from . import _conv_cpu, _conv_matrix_tuning, _conv_subgroup_matrix
from . import prologue as _prologue
from ._util import check_float, check_same, dummy, kernel, pair
from .linear import conv1x1
from .prologue import ConvPrologue, no_prologue
from .spatial import upsample_nearest2x

__all__ = ["conv2d"]

# 1x1 convolutions (stride 1, no padding, one group) are plain GEMMs: route them to
# gpustd.linalg's GEMM rather than the implicit GEMM (H200: 0.085 vs 0.107 ms for
# 2x320x64x64 -> 320 in float32, 0.086 vs 0.113 ms in float16; only 320 -> 640 at 32x32 in
# float32 is faster implicit, 0.052 vs 0.056 ms; bench/results/nn-h200.json).
ONE_BY_ONE_VIA_LINALG = True
_MAX_SPLITS = 16


def _conv_kernel(dtype: np.dtype, out_dtype: Any, vec_w: bool, **constants: int) -> Kernel:
    """shaders/nn/conv2d.wgsl for these element types and overrides, built once."""
    types = {"T": dtype, "O": out_dtype}
    if not vec_w:
        types["WV"] = "T"
    return Kernel.cached("nn/conv2d", parts=("linalg/register_tile",), types=types,
                         constants={**constants, "VEC_W": int(vec_w)})


def _output_size(size: int, k: int, stride: int, pad: int, dil: int) -> int:
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


def _plan(cout_g: int, pixels: int, groups: int, k_total: int) -> tuple[int, int, int, int]:
    """(BM, BN, splits, BK) for a conv of cout_g channels x pixels x k_total per group.

    128 invocations of 8 x 8 outputs over K steps of 8. 128 channels x 64 pixels gathers the
    fewest patch values per invocation (the gather is the costly part of the implicit GEMM):
    10-15% faster than 64 x 128 or 128 x 128 tiles on an H200. 64 x 128 serves channel
    counts that 64-row tiles cover with less waste (320 = 5 x 64, not 3 x 128 rows).
    """
    def waste(bm: int) -> int:
        return -cout_g % bm

    if pixels <= 64:
        bm, bn = (64 if cout_g <= 64 else 128), 64
    elif waste(128) > waste(64):
        bm, bn = 64, 128
    else:
        bm, bn = 128, 64
    bk = 8
    return bm, bn, _splits(bm, bn, bk, cout_g, pixels, groups, k_total), bk


def _splits(bm: int, bn: int, bk: int, cout_g: int, pixels: int, groups: int,
            k_total: int) -> int:
    """K splits for a BM x BN tile: layers with few tiles split K.

    The cost model counts waves of workgroups over the multiprocessors times the K tiles each
    walks (a wave only slightly over the multiprocessor count runs at half speed, as
    measured), plus the split-K partial sums' traffic. Its choices were within 2% of the best
    of 1-32 splits for the SD 1.5 layers on an H200.
    """
    count = math.ceil(cout_g / bm) * math.ceil(pixels / bn) * groups
    if count >= 4 * MULTIPROCESSORS:
        # Several 128-invocation workgroups share a multiprocessor, so four waves' worth fill
        # the GPU; splitting then only adds partial sums (VAE 512@128: 2.61 ms unsplit,
        # 2.67 ms in 9 splits that also take 300 MB of partial sums).
        return 1
    k_tiles = math.ceil(k_total / bk)

    def cost(s: int) -> float:
        waves = math.ceil(count * s / MULTIPROCESSORS)
        extra = 0.0 if s == 1 else 2 + s * cout_g * groups * pixels / 1e6
        return waves * math.ceil(k_tiles / s) + extra

    return min(range(1, min(_MAX_SPLITS, max(1, k_tiles // 8)) + 1), key=cost)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1, add: Tensor | None = None,
           prologue: ConvPrologue | None = None, upsample: int = 1,
           negative_slope: float | None = None, scale: float = 1.0,
           in_channels: int | None = None,
           images: tuple[int, int] | None = None,
           _plan_override: tuple[int, int, int, int] | None = None) -> Tensor:
    """2-D cross-correlation of NCHW `x` with `weight` [out, in/groups, kh, kw] plus `bias`.

    x: [N, C_in, H, W] float32/float16; weight and bias of the same dtype; stride, padding
    and dilation are ints or (h, w) pairs (zero padding). Returns [N, C_out, H_out, W_out].
    Accumulates in float32. add: a tensor added in the epilogue (no extra pass; on a CPU
    adapter a float32 one is added in a pass after, the same sum), of the output's shape (a
    residual) or [N, C_out, 1, 1] (one value per image and channel, e.g. a time embedding).
    prologue: what precedes the conv, applied to x as it is read
    (gpustd.nn.group_norm_prologue(x, ...): GroupNorm (+ SiLU), the normalized x never
    written; the padding is that of the normalized x). torch: `torch.nn.functional.conv2d(x,
    weight, bias, stride, padding, dilation, groups)` (`+ add`; with a prologue, of
    `F.silu(F.group_norm(x, ...))`). upsample: 2 reads x upsampled 2x, nearest neighbour,
    without writing the upsampled tensor (torch: of `F.interpolate(x, scale_factor=2,
    mode="nearest")`; the prologue, if any, applies to x before it). images: (start, count)
    convolves only x[start:start + count], read where it lies (no copy of those images; not
    with a prologue). torch: of `x[start:start + count]`.
    negative_slope, scale: the output is `scale * leaky_relu(conv + bias, negative_slope) +
    add` (None: no activation), as ESRGAN's dense blocks need (torch: `scale *
    F.leaky_relu(y, negative_slope) + add`); the matrix-unit kernel applies them in its
    epilogue, elsewhere they run as the same ops after the conv. in_channels: the conv reads
    only x's first in_channels channels (a dense block's features gathered in one tensor; no
    prologue): torch: of `x[:, :in_channels]`.
    """
    op = "conv2d"
    check_float(x, "x", op, ndim=4)
    check_float(weight, "weight", op, ndim=4)
    check_same(op, x, weight=weight, bias=bias)
    sh, sw = pair(stride, "stride", op, minimum=1)
    ph, pw = pair(padding, "padding", op)
    dh, dw = pair(dilation, "dilation", op, minimum=1)
    if upsample not in (1, 2):
        raise ValueError(f"{op}: upsample must be 1 or 2 (nearest), got {upsample!r}")
    n, c_in, h, w = x.shape
    start, n = _images(op, images, n, prologue)
    h, w = h * upsample, w * upsample  # the size the conv sees
    c_out, cin_g, kh, kw = weight.shape
    if in_channels is not None:
        if not isinstance(in_channels, (int, np.integer)) or not 0 < in_channels <= c_in:
            raise ValueError(f"{op}: in_channels must be an int in 1..{c_in} (x's channels), "
                             f"got {in_channels!r}")
        if prologue is not None:
            raise ValueError(f"{op}: in_channels does not combine with a prologue; pass "
                             "x[:, :in_channels]'s own tensor")
        if in_channels == c_in:
            in_channels = None
        else:
            c_in = in_channels
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
    add_mode = _add_mode(op, add, x, (n, c_out, ho, wo))
    epilogue = negative_slope is not None or scale != 1.0
    if prologue is not None:
        prologue.check(op, x)
        if not _prologue.FUSED:
            x, prologue = prologue.apply(x), None
    if upsample == 2 and not _prologue.FUSED:
        x, upsample = upsample_nearest2x(x), 1
    plain_1x1 = (ONE_BY_ONE_VIA_LINALG and add is None and prologue is None and upsample == 1
                 and (kh, kw, sh, sw, ph, pw, groups) == (1, 1, 1, 1, 0, 0, 1))
    if plain_1x1 and n != x.shape[0]:
        x, start = take_slice(x, start, start + n, axis=0), 0  # the GEMM reads all of x
    matrix = _plan_override is None and _conv_subgroup_matrix.applies(
        x, weight, groups, (ho, wo), split=not plain_1x1, count=n)
    if epilogue and not (matrix and _conv_subgroup_matrix.split_count(
            c_out, n * ho * wo, cin_g * kh * kw) == 1):
        y = conv2d(x, weight, bias, stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw),
                   groups=groups, prologue=prologue, upsample=upsample,
                   in_channels=in_channels, images=None if images is None else (start, n),
                   _plan_override=_plan_override)
        y = y if negative_slope is None else maximum(y, y * negative_slope)
        y = y if scale == 1.0 else y * scale
        return y if add is None else y + add
    if matrix:
        geometry = ((sh, sw), (ph, pw), (dh, dw), (ho, wo))
        tile = _conv_matrix_tuning.conv_tile(x.device, (n, c_in, h, w), weight.shape,
                                             *geometry)  # x's channels beyond c_in unread
        return _conv_subgroup_matrix.conv2d_matrix(  # f16 on the matrix units (Dawn)
            x, weight, bias, stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw),
            out_hw=(ho, wo), add=add, add_mode=add_mode, tile=tile, prologue=prologue,
            upsample=upsample, images=(start, n),
            leaky=((1.0 if negative_slope is None else negative_slope, scale)
                   if epilogue else None))
    if in_channels is not None:  # the portable kernels read all of x's channels
        x = take_slice(x, 0, in_channels, axis=1)
    if plain_1x1 and _plan_override is None and x.size and weight.size:
        return conv1x1(x, weight, bias)
    out = Tensor.empty((n, c_out, ho, wo), x.dtype, device=x.device)
    pixels = n * ho * wo
    if out.size == 0:
        return out
    if c_in == 0:
        return out if add is None else _plain_add(out, bias, add)
    if _plan_override is None and x.device.info.type == "cpu":
        # A CPU adapter runs a direct conv shaped for it (gpustd/nn/_conv_cpu.py). A float32
        # add follows it as a pass of its own, the same sum, (v + bias) + add: each ADD kind
        # would be one more kernel for llvmpipe to compile at its first dispatch.
        add_after = add if add is not None and x.dtype == np.float32 else None
        _conv_cpu.conv2d(out, x, weight, bias, stride=(sh, sw), padding=(ph, pw),
                         dilation=(dh, dw), groups=groups,
                         add=None if add_after is not None else add,
                         add_mode=0 if add_after is not None else add_mode,
                         prologue=prologue, upsample=upsample, x_start=start,
                         size=(c_in, h, w))
        return out if add_after is None else out + add_after
    cout_g = c_out // groups
    k_total = cin_g * kh * kw
    bm, bn, splits, bk = _plan_override or _plan(cout_g, pixels, groups, k_total)
    k_tiles = math.ceil(k_total / bk)
    if splits > 1 and splits * out.size * 4 > x.device.limits["max-storage-buffer-binding-size"]:
        splits = 1  # the partial sums would not fit one binding (as gemm.plan.k_partition)
    per_split = math.ceil(k_tiles / splits)
    splits = math.ceil(k_tiles / per_split)
    has_bias = bias is not None
    params = dict(c_in=c_in, h=h, w=w, c_out=c_out, ho=ho, wo=wo, cin_g=cin_g, cout_g=cout_g,
                  k_total=k_total, pixels=pixels, splits=splits, k_tiles_per_split=per_split,
                  stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw, dil_h=dh, dil_w=dw,
                  x_offset=start * x.shape[1] * x.shape[2] * x.shape[3])  # images' start
    grid = (math.ceil(pixels / bn), math.ceil(cout_g / bm), groups * splits)
    bias_t = bias if has_bias else dummy(x)
    add_t = add if add is not None else dummy(x)
    shape = dict(WY=bm // 8, WX=bn // 8, BK=bk, KH=kh, KW=kw,
                 PROLOGUE=0 if prologue is None else prologue.kind, UP_SHIFT=upsample - 1)
    norm = no_prologue(x) if prologue is None else prologue.table
    vec_w = k_total % 4 == 0  # weight rows start on vec4 boundaries
    if splits == 1:
        k = _conv_kernel(x.dtype, x.dtype, vec_w, HAS_BIAS=int(has_bias), ADD=add_mode,
                         **shape)
        k.dispatch(grid, x, weight, bias_t, add_t, out, norm, **params)
        return out
    partial = Tensor.empty((splits, out.size), np.float32, device=x.device)
    k = _conv_kernel(x.dtype, np.float32, vec_w, HAS_BIAS=0, ADD=0, **shape)
    k.dispatch(grid, x, weight, bias_t, dummy(x), partial, norm, **params)
    finish = kernel("conv2d_splitk", {"T": x.dtype}, HAS_BIAS=int(has_bias), ADD=add_mode)
    finish.dispatch(finish.groups_for(out.size), partial, bias_t, add_t, out, n=out.size,
                    hw=ho * wo, c_out=c_out, splits=splits)
    return out


def _images(op: str, images: Any, n: int, prologue: ConvPrologue | None) -> tuple[int, int]:
    """conv2d's `images` as (start, count) of x's n images (None: all of them)."""
    if images is None:
        return 0, n
    if (not isinstance(images, tuple) or len(images) != 2
            or not all(isinstance(v, (int, np.integer)) for v in images)):
        raise ValueError(f"{op}: images must be a (start, count) pair of ints, got {images!r}")
    start, count = int(images[0]), int(images[1])
    if start < 0 or count < 1 or start + count > n:
        raise ValueError(f"{op}: images {images} lie outside x's {n} images; give a start "
                         f"from 0 and a count of at least 1 within them")
    if prologue is not None:
        raise ValueError(f"{op}: images and a prologue do not go together; apply the "
                         "prologue first or convolve all of x")
    return start, count


def _add_mode(op: str, add: Tensor | None, x: Tensor, shape: tuple[int, int, int, int]) -> int:
    """conv2d.wgsl's ADD for `add`: 0 none, 1 of the output's shape, 2 one per (n, c)."""
    if add is None:
        return 0
    check_same(op, x, add=add)
    if add.shape == shape:
        return 1
    if add.shape == (*shape[:2], 1, 1):
        return 2
    raise ValueError(f"{op}: add must have the output's shape {shape} or "
                     f"{(*shape[:2], 1, 1)}, got {add.shape}")


def _plain_add(out: Tensor, bias: Tensor | None, add: Tensor) -> Tensor:
    """An empty contraction (no input channels): the output is bias + add alone."""
    result = Tensor.zeros(out.shape, out.dtype, device=out.device) + add
    return result + bias.reshape(1, -1, 1, 1) if bias is not None else result
