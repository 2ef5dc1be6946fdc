"""Tile choice of the f16 implicit-GEMM conv2d on the matrix units (gpustd/nn/
_conv_subgroup_matrix.py) by the autotuner (gpucore.autotune): op "conv_sm", its shape classes,
candidates and trials.

Above the kernel it tunes: conv2d asks conv_tile for the tile and hands it to the kernel, which
never imports this kernels. choose_conv_tile's rule gives the default. Why no candidate changes
a result: gpustd/gemm/matrix_tuning.py's docstring (the same generator, the same argument).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from gpucore import Device, autotune

from ..gemm import matrix_units
from ..gemm.accumulate import conv_accumulation
from ..gemm.matrix_codegen import MatrixTile
from ..gemm.matrix_tuning import Pair, Shape, fits, shared_scratch, tile_name
from ..gemm.tuning import bucket
from . import _conv_subgroup_matrix as kernels

__all__ = ["CONV_OP", "SD_CONVS", "SD_SPLIT_CONVS", "conv_candidates", "conv_class", "conv_tile",
           "problems"]

CONV_OP = "conv_sm"
# (batch, c_in, size, c_out, stride) of the 3x3 convolutions (padding 1, square inputs of
# `size`) that the matrix kernel runs (conv2d_matrix: enough output tiles) in an SD 1.5 UNet
# step (2 x 4 x 64 x 64, CFG batch 2), an SDXL UNet step (2 x 4 x 128 x 128) and the VAE
# decoding (1 x 4 x 64 x 64 -> 512 x 512) and encoding a 512 x 512 picture. The UNets'
# convolutions at 16 x 16 and 8 x 8 make too few tiles and split K (SD_SPLIT_CONVS).
SD_SPLIT_CONVS = [
    # SD 1.5 UNet: downsamplers, down/mid/up blocks at 16 x 16 and 8 x 8 (up: with skips)
    (2, 320, 64, 320, 2), (2, 640, 32, 640, 2), (2, 1280, 16, 1280, 2), (2, 640, 16, 1280, 1),
    (2, 1280, 16, 1280, 1), (2, 1920, 16, 1280, 1), (2, 2560, 16, 1280, 1),
    (2, 1280, 8, 1280, 1), (2, 2560, 8, 1280, 1),
]
SD_CONVS = [
    *SD_SPLIT_CONVS,
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


def _tiles(accumulate: str) -> dict[str, MatrixTile]:
    return kernels.CONV_TILES_ACC16 if accumulate == "f16" else kernels.CONV_TILES


@functools.lru_cache(maxsize=4096)
def conv_class(kh: int, kw: int, stride: tuple[int, int], c_out: int, k_total: int,
               pixels: int, accumulate: str = "f32") -> str:
    """e.g. "f16/3x3/s1x1/co384/k3072/p8192": the kernel size (the shader is specialized on
    it), the stride (it changes the gather's reads) and bucketed output channels, K =
    c_in kh kw and output pixels (images x height x width); "/acc16" after it with f16
    accumulators."""
    return (f"f16/{kh}x{kw}/s{stride[0]}x{stride[1]}/co{bucket(c_out)}/k{bucket(k_total)}"
            f"/p{bucket(pixels)}" + ("/acc16" if accumulate == "f16" else ""))


def conv_candidates(device: Device, c_out: int, pixels: int,
                    accumulate: str = "f32") -> tuple[str, ...]:
    """The conv kernel's CONV_TILES (CONV_TILES_ACC16 with f16 accumulators) whose workgroup
    and grid fit `device` (the narrow tiles only for convs of at most NARROW output channels
    over NARROW_PIXELS or more)."""
    limits = device.limits
    return _candidates(limits["max-compute-workgroup-storage-size"],
                       limits["max-compute-invocations-per-workgroup"],
                       limits["max-compute-workgroups-per-dimension"], c_out, pixels,
                       accumulate)


@functools.lru_cache(maxsize=4096)
def _candidates(storage: int, invocations: int, grid: int, c_out: int,
                pixels: int, accumulate: str) -> tuple[str, ...]:
    # once per conv size: every conv call asks (RRDBNet's 351 convs spent a third of their
    # host time here, in MatrixTile.shared_bytes)
    device: Any = SimpleNamespace(limits={"max-compute-workgroup-storage-size": storage,
                                          "max-compute-invocations-per-workgroup": invocations,
                                          "max-compute-workgroups-per-dimension": grid})
    narrow = c_out <= kernels.NARROW and pixels >= kernels.NARROW_PIXELS
    return tuple(name for name, t in _tiles(accumulate).items()
                 if fits(device, t, (math.ceil(pixels / t.bn), math.ceil(c_out / t.bm)))
                 and (narrow or name not in kernels.NARROW_ONLY))


def _rule(device: Device, c_out: int, pixels: int, k_total: int, accumulate: str) -> str:
    """choose_conv_tile's tile for this conv among those `device`'s workgroups allow."""
    limits = device.limits
    return tile_name(_tiles(accumulate), kernels.choose_conv_tile(
        c_out, pixels, k_total, storage=limits["max-compute-workgroup-storage-size"],
        invocations=limits["max-compute-invocations-per-workgroup"], accumulate=accumulate))


def conv_tile(device: Device, x_shape: Shape, weight_shape: Shape, stride: Pair,
              padding: Pair, dilation: Pair, out_hw: Pair) -> MatrixTile:
    """The tile of conv2d_matrix for this convolution (x [N, C_in, H, W], weight [C_out, C_in,
    kh, kw]): the tuner's winner for its class, else choose_conv_tile's; f16 accumulators
    where gpustd.gemm.accumulate.conv_accumulation says so (GPUSTD_CONV_ACCUMULATE=f16)."""
    c_out, c_in, kh, kw = weight_shape
    pixels = x_shape[0] * out_hw[0] * out_hw[1]
    accumulate = conv_accumulation(device)
    default = _rule(device, c_out, pixels, c_in * kh * kw, accumulate)
    winner = autotune.select(
        device, CONV_OP, conv_class(kh, kw, stride, c_out, c_in * kh * kw, pixels, accumulate),
        conv_candidates(device, c_out, pixels, accumulate), default,
        _conv_trial(device, x_shape, weight_shape, stride, padding, dilation, out_hw,
                    accumulate))
    return _tiles(accumulate)[winner]


def _conv_trial(device: Device, x_shape: Shape, weight_shape: Shape, stride: Pair,
                padding: Pair, dilation: Pair, out_hw: Pair,
                accumulate: str = "f32") -> autotune.Trial:
    """trial(name) -> one run of that conv tile (with a bias) on scratch operands."""
    scratch = shared_scratch(device, (x_shape, weight_shape, weight_shape[:1]))

    def trial(name: str) -> Callable[[], None]:
        held, tile = scratch(), _tiles(accumulate)[name]

        def run() -> None:
            x, weight, bias = held.tensors
            kernels.conv2d_matrix(x, weight, bias, stride=stride, padding=padding,
                                  dilation=dilation, out_hw=out_hw, tile=tile)

        return run

    return trial


def problems(device: Device) -> list[autotune.Problem]:
    """conv_sm's classes of SD_CONVS that the matrix kernel runs, on a device with f16
    subgroup matrices, keyed by its accumulation (accumulate.conv_accumulation); none
    elsewhere (the kernel cannot run there)."""
    if not matrix_units.available(device):
        return []
    accumulate = conv_accumulation(device)
    limit = device.limits["max-compute-workgroups-per-dimension"]
    found: dict[str, autotune.Problem] = {}
    for batch, c_in, size, c_out, stride in SD_CONVS:
        out = (size - 1) // stride + 1
        pixels = batch * out * out
        small = kernels.CONV_TILES["64x64"]  # conv2d keeps its own kernel (kernels.applies)
        if not kernels.routed(c_out, pixels, c_in * 9) or pixels > limit * small.bn:
            continue
        key = conv_class(3, 3, (stride, stride), c_out, c_in * 9, pixels, accumulate)
        found.setdefault(key, autotune.Problem(
            CONV_OP, key, conv_candidates(device, c_out, pixels, accumulate),
            _rule(device, c_out, pixels, c_in * 9, accumulate),
            _conv_trial(device, (batch, c_in, size, size), (c_out, c_in, 3, 3),
                        (stride, stride), (1, 1), (1, 1), (out, out), accumulate)))
    return list(found.values())


autotune.register(CONV_OP, problems)
