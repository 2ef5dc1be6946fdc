"""The W8A8 GEMM: int8 activations (one scale per row) times int8 weights (one scale per output
channel), i32 sums, the epilogue applying both scales, the residual and the bias, f16 (or f32)
out. gpustd/nn/int8_linear.py quantizes the operands; gpustd/gemm/dispatch.record_gemm_w8a8
picks the kernel.

- On the matrix units (Dawn's `i8 -> i32` 16x16x32 subgroup matrices; emulated on wgpu-native
  by gpucore/_matrix_emulation.py): the same generator and tiles as the f16 GEMM
  (gpustd/gemm/matrix_codegen.py with `component="i8"`), operands staged as words of four
  int8, f16 out.
- Elsewhere: shaders/quant/gemm_w8a8.wgsl, 4 x 4 outputs an invocation, WGSL's dot4I8Packed
  (or, with `PACKED_DOT` off, i32 arithmetic), f16 or f32 out.

Both operands are stored [rows, KW] i32 words (K along the row, padded with zeros to whole
words), as the weight of a linear layer is; the sums are exact, so both kernels give the same
i32 sums bit for bit, and the results differ only where the epilogue's f32 rounding does.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from gpucore import Buffer, Device, Kernel

from . import matrix_units
from .matrix_codegen import MatrixTile, Operand, contiguous_load, kernel_source, load_width
from .matrix_tile import on_device
from .plan import MULTIPROCESSORS

__all__ = ["PACKED_DOT", "TILES", "available", "choose_tile", "kernel_dims",
           "record_w8a8_matrix", "record_w8a8_portable", "source"]

# 64-byte staged rows (BK 64), as the f16 GEMM's 32-deep ones; i32 accumulators.
TILES = {
    "64x64": MatrixTile(2, 2, 2, 2, bk=64, prefetch=False, component="i8", acc="i32"),
    "128x128": MatrixTile(4, 2, 2, 4, bk=64, component="i8", acc="i32"),
    "128x128np": MatrixTile(4, 2, 2, 4, bk=64, prefetch=False, component="i8", acc="i32"),
    "128x256": MatrixTile(4, 4, 2, 4, bk=64, prefetch=False, component="i8", acc="i32"),
    "256x128": MatrixTile(4, 2, 4, 4, bk=64, component="i8", acc="i32"),
    "128x128k128": MatrixTile(4, 2, 2, 4, bk=128, component="i8", acc="i32"),
}
# The portable kernel's dot4: WGSL's dot4I8Packed (naga and Tint both take it), or False for
# the i32-arithmetic part (quant/dot4_bytes).
PACKED_DOT = True

_PARAMS = """struct Params { m: u32, n: u32, kw: u32, has_bias: u32, beta: f32 }"""
_STORE = """fn store_c(row: u32, col: u32, value: f32) {
  let idx = row * params.n + col;
  var v = value * scale_a[row] * scale_b[col];
  if (params.beta != 0.0) { v += params.beta * f32(c[idx]); }
  if (params.has_bias == 1u) { v += f32(bias[col]); }
  c[idx] = f16(v);
}"""


def available(device: Device) -> bool:
    """Whether `device` multiplies i8 16x16x32 fragments into i32 on subgroups of 32 (Dawn on
    an H100; emulated on wgpu-native adapters with shader-f16 and subgroups)."""
    config = device.info.matrix_config("i8", "i32", 16, 16, 32)
    return (config is not None and "subgroup" in device.features and device.has_f16
            and config.min_subgroup_size in (0, 32) and config.max_subgroup_size in (0, 32))


def choose_tile(m: int, n: int, k: int = 0, *, storage: int = 48 * 1024,
                invocations: int = 1024) -> MatrixTile:
    """The rule's tile for an m x k by k x n W8A8 product. From two waves of 128 x 128 tiles:
    256 x 128 (16 subgroups) where n is 3 k or more, else 128 x 128 in K steps of 128 bytes;
    below that 64 x 64. H100, Dawn, 2026-11-26 (m x k x n, ms; int8-gemm-dawn-h100.json):
    4096^3 0.310 (k128) / 0.313 (256 x 128) / 0.403 (128 x 128, K steps of 64); FLUX's 4608 x
    3072 x 3072 0.226 / 0.241 / 0.279, 4608 x 3072 x 12288 0.881 / 0.832 / 1.121, 4608 x 12288
    x 3072 0.763 / 0.846 / 0.999. storage, invocations: the device's workgroup memory and
    invocations a workgroup; tiles that need more are passed over."""
    waves = math.ceil(m / 128) * math.ceil(n / 128) / MULTIPROCESSORS
    if waves >= 2:
        for name, wanted in (("256x128", n >= 3 * k), ("128x128k128", True),
                             ("128x128", True)):
            tile = TILES[name]
            if wanted and tile.shared_bytes() <= storage and tile.threads <= invocations:
                return tile
    return TILES["64x64"]


def _shape_note(dims: tuple[int | None, int, int] | None) -> str:
    """What the kernel's comment says of its shape."""
    if dims is None:
        return ""
    return f", aligned {dims}" if dims[0] else f", n {dims[1]} kw {dims[2]} aligned, M ragged"


def source(tile: MatrixTile, width_a: int, width_b: int,
           dims: tuple[int | None, int, int] | None = None) -> str:
    """The WGSL of one W8A8 matrix-unit kernel: c (f16 [m, n]) = (a [m, kw] words) (b [n, kw]
    words)^T scale_a[row] scale_b[col] (+ beta c) (+ bias). width_*: words per global load
    (1 or 4). dims (m, n, kw) of a shape that fills the tile: a kernel without bound checks,
    its sizes constants. (None, n, kw): only M does not fill it (as the f16 GEMM's
    matrix_gemm_source.source): n and kw constants, m a uniform, A's row clamped to the last
    one rather than checked (the rows computed past M are never stored), B unchecked, C's
    rows checked; the i32 sums are exact, so the same bits as the checked kernel (dims None).
    """
    checked = dims is None
    ragged_m = dims is not None and dims[0] is None
    declarations = f"""{_PARAMS}
@group(0) @binding(0) var<storage, read> a: array<{"vec4<i32>" if width_a == 4 else "i32"}>;
@group(0) @binding(1) var<storage, read> b: array<{"vec4<i32>" if width_b == 4 else "i32"}>;
@group(0) @binding(2) var<storage, read> scale_a: array<f32>;
@group(0) @binding(3) var<storage, read> scale_b: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f16>;
@group(0) @binding(5) var<storage, read_write> c: array<f16>;
@group(0) @binding(6) var<uniform> params: Params;

{contiguous_load("a", width_a, "params.m", "params.kw", "params.kw", "0u", checked=checked,
                 component="i8", clamp="row" if ragged_m else "")}

{contiguous_load("b", width_b, "params.n", "params.kw", "params.kw", "0u", checked=checked,
                 component="i8")}

{_STORE}"""
    text = kernel_source(tile, Operand("a", False, width_a), Operand("b", False, width_b),
                         declarations=declarations, setup="",
                         extent=("params.m", "params.n", "params.kw"),
                         comment="W8A8 GEMM" + _shape_note(dims), aligned=not checked,
                         ragged_m=ragged_m)
    if dims is None:
        return text
    values = {name: value for name, value in zip(("m", "n", "kw"), dims) if value is not None}
    return re.sub(rf"params\.({'|'.join(values)})\b", lambda hit: f"{values[hit.group(1)]}u",
                  text)


def kernel_dims(tile: MatrixTile, m: int, n: int,
                kw: int) -> tuple[int | None, int, int] | None:
    """source's `dims` for an m x n product of kw-word rows on `tile`, by the f16 GEMM's rule
    (matrix_units.kernel_dims on K in bytes; RAGGED_KERNEL from RAGGED_KERNEL_ROWS rows on):
    (m, n, kw) where it fills the tile, (None, n, kw) where only M does not, else None."""
    ragged = matrix_units.RAGGED_KERNEL and m >= matrix_units.RAGGED_KERNEL_ROWS
    dims = matrix_units.kernel_dims(tile, m, n, 4 * kw, ragged)
    return None if dims is None else (dims[0], n, kw)


def record_w8a8_matrix(a: Buffer[Any], b: Buffer[Any], scale_a: Buffer[Any],
                       scale_b: Buffer[Any], bias: Buffer[Any], c: Buffer[Any], *, m: int,
                       n: int, kw: int, has_bias: bool, beta: float, tile: MatrixTile) -> None:
    """Record the matrix-unit W8A8 GEMM (see source) in `tile`; no validation (the caller,
    gpustd.gemm.dispatch.record_gemm_w8a8, has done it); `bias` is a placeholder when not
    has_bias."""
    width = load_width(tile, kw, (0,))
    if min(tile.bm, tile.bn) * tile.step // width % tile.threads:
        width = 1  # too few vector loads to give every invocation one
    dims = kernel_dims(tile, m, n, kw)
    kernel = Kernel.generated("quant/gemm_w8a8_subgroup_matrix", source,
                              on_device(tile, c.device), width, width, dims)
    kernel.dispatch((math.ceil(n / tile.bn), math.ceil(m / tile.bm), 1), a, b, scale_a,
                    scale_b, bias, c, m=m, n=n, kw=kw, has_bias=int(has_bias), beta=beta)


def record_w8a8_portable(a: Buffer[Any], b: Buffer[Any], scale_a: Buffer[Any],
                         scale_b: Buffer[Any], bias: Buffer[Any], c: Buffer[Any], *, m: int,
                         n: int, kw: int, has_bias: bool, beta: float) -> None:
    """Record shaders/quant/gemm_w8a8.wgsl (the same product, f16 or f32 c as c's dtype)."""
    part = "quant/dot4_packed" if PACKED_DOT else "quant/dot4_bytes"
    kernel = Kernel.cached("quant/gemm_w8a8", parts=(part,), types={"T": np.dtype(c.dtype)})
    kernel.dispatch((math.ceil(n / 64), math.ceil(m / 64), 1), a, b, scale_a, scale_b, bias, c,
                    m=m, n=n, kw=kw, has_bias=int(has_bias), beta=beta)
