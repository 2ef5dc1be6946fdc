"""Tile choice of the matrix-unit kernels by the autotuner (gpucore.autotune): shape classes,
candidates and trials of the f16 subgroup-matrix GEMM ("gemm_sm") and conv2d ("conv_sm").

The fixed rules (gpustd/_gemm_subgroup_matrix.choose_tile, nn/_conv_subgroup_matrix.
choose_conv_tile) give the default; which tile is fastest depends on Dawn's toggles (on an
H100, 128 x 128 wins 4096^3 with disable_robustness, 64 x 64 without: tools/sm_sweep.py),
which a tuner keyed by runtime, adapter and driver absorbs.

Why no candidate changes a result. Every candidate is a tile of gpustd/_subgroup_matrix.py's
generator with f32 accumulators and K steps (BK) that are multiples of 16; they differ only in
how many fragments a subgroup holds, how many subgroups a workgroup has and how deep a
staged K step is. In the generated kernel each 16 x 16 output fragment has one accumulator,
zero-initialized, and each K step's unrolled code multiplies its 16-deep slices in ascending
order (kk = 0, 16, ..., BK - 16) while the K loop steps ascending: so every candidate adds
the same 16 x 16 x 16 fragment products -- same fragment position (tiles and fragment
offsets are multiples of 16), same operands (staging copies values, zero outside the
matrix) -- into each output in the same ascending order of K slices, through the same
subgroupMatrixMultiplyAccumulate. The only difference: with BK = 32 a K that is not a
multiple of 32 gets one more slice than with BK = 16, whose operands are all zeros; its
products are +0, and adding +0 to the accumulator changes nothing (it starts at +0, and a
sum of f16 products is never -0 nor an f32 subnormal, so x + 0 = x bit for bit). The
epilogue (alpha, beta, bias, residual, rounding to f16) is the same code for every tile.
What would change the order is not a candidate: f16 accumulators (SMTile.acc), split K.
tests/test_sm_tune.py checks every candidate bitwise against the default on the GPU.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from gpucore import Buffer, Device, autotune

from .._tensor import Tensor
from . import matrix_units as _gemm_subgroup_matrix
from . import plan as _gemm
from .matrix_codegen import SMTile
from .tuning import SD_SHAPES, _bucket

Shape = tuple[int, ...]
Pair = tuple[int, int]

__all__ = ["CONV_OP", "GEMM_OP", "GEMM_TILES", "SD_CONVS", "conv_candidates", "conv_class",
           "conv_tile", "gemm_candidates", "gemm_class", "gemm_tile", "problems"]

GEMM_OP = "gemm_sm"
CONV_OP = "conv_sm"
# The shipped GEMM tiles and the sweep's 128 x 128 with K steps of 16 (72.3 TFLOP/s at
# 4096^3 nt on an H100 against 74.1 for the default: close enough to win elsewhere).
GEMM_TILES = {**_gemm_subgroup_matrix.TILES, "128x128k16": SMTile(4, 2, 2, 4, bk=16)}

# (batch, c_in, size, c_out, stride) of the 3x3 convolutions (padding 1, square inputs of
# `size`) that the matrix kernel runs (conv2d_sm: enough output tiles) in an SD 1.5 UNet
# step (2 x 4 x 64 x 64, CFG batch 2), an SDXL UNet step (2 x 4 x 128 x 128) and the VAE
# decoding (1 x 4 x 64 x 64 -> 512 x 512) and encoding a 512 x 512 picture. The UNets'
# convolutions at 16 x 16 and 8 x 8 (SDXL: 32 x 32 below 1280 channels) make too few tiles.
SD_CONVS = [
    # SD 1.5 UNet: conv_in, down/up blocks at 64 x 64 and 32 x 32 (up convs take the skips)
    (2, 4, 64, 320, 1), (2, 320, 64, 320, 1), (2, 960, 64, 320, 1), (2, 640, 64, 320, 1),
    (2, 640, 64, 640, 1), (2, 320, 32, 640, 1), (2, 640, 32, 640, 1), (2, 1920, 32, 640, 1),
    (2, 1280, 32, 640, 1), (2, 960, 32, 640, 1), (2, 1280, 32, 1280, 1),
    # SDXL UNet: 128 x 128, 64 x 64 and 32 x 32, both downsamplers
    (2, 4, 128, 320, 1), (2, 320, 128, 320, 1), (2, 960, 128, 320, 1), (2, 640, 128, 320, 1),
    (2, 640, 128, 640, 1), (2, 320, 128, 320, 2), (2, 320, 64, 640, 1), (2, 640, 64, 640, 1),
    (2, 1920, 64, 640, 1), (2, 1280, 64, 640, 1), (2, 960, 64, 640, 1), (2, 1280, 64, 1280, 1),
    (2, 640, 64, 640, 2), (2, 640, 32, 1280, 1), (2, 1280, 32, 1280, 1),
    (2, 2560, 32, 1280, 1), (2, 1920, 32, 1280, 1),
    # VAE decoder to 512 x 512: conv_in, mid, up blocks and their upsamplers, conv_out
    (1, 4, 64, 512, 1), (1, 512, 64, 512, 1), (1, 512, 128, 512, 1), (1, 512, 256, 512, 1),
    (1, 512, 256, 256, 1), (1, 256, 256, 256, 1), (1, 256, 512, 256, 1),
    (1, 256, 512, 128, 1), (1, 128, 512, 128, 1), (1, 128, 512, 3, 1),
    # VAE encoder from 512 x 512: conv_in, down blocks and downsamplers
    (1, 3, 512, 128, 1), (1, 128, 512, 128, 1), (1, 128, 512, 128, 2), (1, 128, 256, 256, 1),
    (1, 256, 256, 256, 1), (1, 256, 256, 256, 2), (1, 256, 128, 512, 1), (1, 512, 128, 512, 1),
    (1, 512, 128, 512, 2), (1, 512, 64, 512, 1),
]


def _conv_module() -> Any:
    """gpustd.nn._conv_subgroup_matrix, imported on use: it imports this module."""
    from ..nn import _conv_subgroup_matrix

    return _conv_subgroup_matrix


# -- shape classes and candidates ------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def gemm_class(m: int, n: int, k: int, batch: int, trans_a: bool, trans_b: bool) -> str:
    """e.g. "f16/nt/m8192/n384/k384/b1": layout and sizes bucketed as gpustd._gemm_tune's."""
    layout = ("t" if trans_a else "n") + ("t" if trans_b else "n")
    return f"f16/{layout}/m{_bucket(m)}/n{_bucket(n)}/k{_bucket(k)}/b{_bucket(batch)}"


@functools.lru_cache(maxsize=4096)
def conv_class(kh: int, kw: int, stride: tuple[int, int], c_out: int, k_total: int,
               pixels: int) -> str:
    """e.g. "f16/3x3/s1x1/co384/k3072/p8192": the kernel size (the shader is specialized on
    it), the stride (it changes the gather's reads) and bucketed output channels, K =
    c_in kh kw and output pixels (images x height x width)."""
    return (f"f16/{kh}x{kw}/s{stride[0]}x{stride[1]}/co{_bucket(c_out)}/k{_bucket(k_total)}"
            f"/p{_bucket(pixels)}")


def _fits(device: Device, tile: SMTile, grid: tuple[int, int]) -> bool:
    limits = device.limits
    return (tile.shared_bytes() <= limits["max-compute-workgroup-storage-size"]
            and tile.threads <= limits["max-compute-invocations-per-workgroup"]
            and max(grid) <= limits["max-compute-workgroups-per-dimension"])


def gemm_candidates(device: Device, m: int, n: int) -> tuple[str, ...]:
    """The GEMM_TILES whose workgroup and grid fit `device` for an m x n output."""
    return tuple(name for name, t in GEMM_TILES.items()
                 if _fits(device, t, (math.ceil(n / t.bn), math.ceil(m / t.bm))))


def conv_candidates(device: Device, c_out: int, pixels: int) -> tuple[str, ...]:
    """The conv kernel's CONV_TILES whose workgroup and grid fit `device`."""
    tiles = _conv_module().CONV_TILES
    return tuple(name for name, t in tiles.items()
                 if _fits(device, t, (math.ceil(pixels / t.bn), math.ceil(c_out / t.bm))))


def _name(tiles: dict[str, SMTile], tile: SMTile) -> str:
    return next(name for name, known in tiles.items() if known == tile)


# -- what the kernels ask ----------------------------------------------------------------
def gemm_tile(device: Device, m: int, n: int, k: int, batch: int, trans_a: bool,
              trans_b: bool) -> SMTile:
    """The tile of record_gemm_sm for this GEMM: the tuner's winner for its class, else
    choose_tile's."""
    default = _name(GEMM_TILES, _gemm_subgroup_matrix.choose_tile(m, n, batch))
    winner = autotune.select(device, GEMM_OP, gemm_class(m, n, k, batch, trans_a, trans_b),
                             gemm_candidates(device, m, n), default,
                             _gemm_trial(device, m, n, k, batch, trans_a, trans_b))
    return GEMM_TILES[winner]


def conv_tile(device: Device, x_shape: Shape, weight_shape: Shape, stride: Pair,
              padding: Pair, dilation: Pair, out_hw: Pair) -> SMTile:
    """The tile of conv2d_sm for this convolution (x [N, C_in, H, W], weight [C_out, C_in,
    kh, kw]): the tuner's winner for its class, else choose_conv_tile's."""
    module = _conv_module()
    c_out, c_in, kh, kw = weight_shape
    pixels = x_shape[0] * out_hw[0] * out_hw[1]
    default = _name(module.CONV_TILES, module.choose_conv_tile(c_out, pixels))
    winner = autotune.select(
        device, CONV_OP, conv_class(kh, kw, stride, c_out, c_in * kh * kw, pixels),
        conv_candidates(device, c_out, pixels), default,
        _conv_trial(device, x_shape, weight_shape, stride, padding, dilation, out_hw))
    return module.CONV_TILES[winner]


# -- trials -------------------------------------------------------------------------------
class _Scratch:
    """Operands shared by one tuning's candidates and freed with their runs: the trial keeps
    only a weak reference (`python -m gpucore tune` holds every problem at once)."""

    def __init__(self, device: Device, shapes: tuple[Shape, ...]) -> None:
        self.tensors = [Tensor(Buffer.from_numpy(_random_f16(math.prod(shape)), device=device),
                               shape) for shape in shapes]


def _random_f16(size: int) -> np.ndarray:
    """Normal f16 values, a random block repeated: timing needs realistic non-zero values,
    not independent ones, and drawing 10^8 normals would take longer than the timing."""
    block = np.random.default_rng(0).standard_normal(min(size, 1 << 16), dtype=np.float32)
    return np.resize(block.astype(np.float16), size)


def _shared(device: Device, shapes: tuple[Shape, ...]) -> Callable[[], _Scratch]:
    """get() -> the scratch operands, made on first use and while no run holds them."""
    ref: Callable[[], _Scratch | None] = lambda: None  # noqa: E731

    def get() -> _Scratch:
        nonlocal ref
        scratch = ref()
        if scratch is None:
            scratch = _Scratch(device, shapes)
            ref = weakref.ref(scratch)
        return scratch

    return get


def _gemm_trial(device: Device, m: int, n: int, k: int, batch: int, trans_a: bool,
                trans_b: bool) -> autotune.Trial:
    """trial(name) -> one run of that GEMM tile on scratch operands of this shape."""
    scratch = _shared(device, ((batch * m * k,), (batch * k * n,), (batch * m * n,)))
    plan = _gemm.batch_plan((batch,), (batch,), (batch,), m * k, k * n)

    def trial(name: str) -> Callable[[], None]:
        held, tile = scratch(), GEMM_TILES[name]

        def run() -> None:
            a, b, c = (t.buffer for t in held.tensors)
            # no bias: the placeholder record_gemm binds (c may not be bound twice)
            _gemm_subgroup_matrix.record_gemm_sm(
                a, b, c, _gemm._placeholder(device, c.dtype), has_bias=False, m=m, n=n, k=k,
                trans_a=trans_a, trans_b=trans_b, alpha=1.0, beta=0.0, plan=plan, tile=tile)

        return run

    return trial


def _conv_trial(device: Device, x_shape: Shape, weight_shape: Shape, stride: Pair,
                padding: Pair, dilation: Pair, out_hw: Pair) -> autotune.Trial:
    """trial(name) -> one run of that conv tile (with a bias) on scratch operands."""
    scratch = _shared(device, (x_shape, weight_shape, weight_shape[:1]))

    def trial(name: str) -> Callable[[], None]:
        held, tile = scratch(), _conv_module().CONV_TILES[name]

        def run() -> None:
            x, weight, bias = held.tensors
            _conv_module().conv2d_sm(x, weight, bias, stride=stride, padding=padding,
                                     dilation=dilation, out_hw=out_hw, tile=tile)

        return run

    return trial


# -- registration ---------------------------------------------------------------------------
def problems(device: Device) -> list[autotune.Problem]:
    """gemm_sm's classes of gpustd._gemm_tune.SD_SHAPES and conv_sm's of SD_CONVS, on a
    device with f16 subgroup matrices; none elsewhere (the kernels cannot run there)."""
    return _gemm_problems(device) + _conv_problems(device)


def _gemm_problems(device: Device) -> list[autotune.Problem]:
    if not _gemm_subgroup_matrix.available(device):
        return []
    found: dict[str, autotune.Problem] = {}
    for m, k, n, batch, layout in SD_SHAPES:
        trans_a, trans_b = layout[0] == "t", layout[1] == "t"
        key = gemm_class(m, n, k, batch, trans_a, trans_b)
        default = _name(GEMM_TILES, _gemm_subgroup_matrix.choose_tile(m, n, batch))
        found.setdefault(key, autotune.Problem(
            GEMM_OP, key, gemm_candidates(device, m, n), default,
            _gemm_trial(device, m, n, k, batch, trans_a, trans_b)))
    return list(found.values())


def _conv_problems(device: Device) -> list[autotune.Problem]:
    if not _gemm_subgroup_matrix.available(device):
        return []
    module = _conv_module()
    limit = device.limits["max-compute-workgroups-per-dimension"]
    found: dict[str, autotune.Problem] = {}
    for batch, c_in, size, c_out, stride in SD_CONVS:
        out = (size - 1) // stride + 1
        pixels = batch * out * out
        small = module.CONV_TILES["64x64"]  # conv2d keeps its own kernel (module.applies)
        if module._tiles(c_out, pixels, small) < module.MIN_TILES or pixels > limit * small.bn:
            continue
        key = conv_class(3, 3, (stride, stride), c_out, c_in * 9, pixels)
        found.setdefault(key, autotune.Problem(
            CONV_OP, key, conv_candidates(device, c_out, pixels),
            _name(module.CONV_TILES, module.choose_conv_tile(c_out, pixels)),
            _conv_trial(device, (batch, c_in, size, size), (c_out, c_in, 3, 3),
                        (stride, stride), (1, 1), (1, 1), (out, out))))
    return list(found.values())


autotune.register(GEMM_OP, _gemm_problems)
autotune.register(CONV_OP, _conv_problems)
