"""GEGLU's projection on the matrix units: out [m, d] = (x W_v^T + b_v) * gelu(x W_g^T + b_g),
W = [W_v; W_g] ([2d, k], as diffusers' GEGLU stores it), in one GEMM whose epilogue applies the
gate. The [m, 2d] projection is never stored: one pass over it fewer, and the value and the gate
stay f32 where the two-pass path (GEMM, then nn.geglu) rounds them to f16 first.

Each workgroup's BN columns are BN / 2 value rows of W and the BN / 2 gate rows that pair with
them (`load_b` maps a tile column to its weight row); matrix_codegen's `pairs` epilogue hands
each value and its gate to `store_pair`. Shapes that fill the tile only (m, 2d, k multiples of
BM, BN, BK: every SD UNet's feed-forward), K unsplit; elsewhere `fits` says no and
gpustd.nn.linear_geglu takes the two passes.
"""

from __future__ import annotations

import math
import re
from typing import Any

from gpucore import Buffer, Kernel, shader_source

from .matrix_codegen import (
    MatrixTile,
    Operand,
    contiguous_load,
    kernel_source,
    load_type,
    load_width,
)
from .matrix_tile import on_device
from .matrix_units import aligned, split_k

__all__ = ["fits", "record_gemm_geglu", "source"]

def _gelu(approximate: int) -> str:
    """gemm.wgsl's `gelu` (its own GEGLU epilogue's: erf by Abramowitz & Stegun, or tanh),
    with its GEGLU override fixed to `approximate`."""
    text = shader_source("linalg/gemm")
    found = re.search(r"^fn gelu\(v: f32\) -> f32 \{$.*?^\}$", text, re.S | re.M)
    if found is None:
        raise RuntimeError("shaders/linalg/gemm.wgsl no longer defines fn gelu(v: f32)")
    return f"const GEGLU = {approximate}u;\n{found.group(0)}"


def fits(tile: MatrixTile, m: int, d: int, k: int) -> bool:
    """Whether the one-GEMM GEGLU takes [m, k] x [2d, k]^T in `tile`: an even number of
    subgroup columns (the pairs), the product filling the tile and K unsplit (a product
    split_k would split goes through the two passes, which split it)."""
    return (tile.wn % 2 == 0 and aligned(tile, m, 2 * d, k)
            and split_k(m, 2 * d, k, 1, tile.acc) == k)


def source(tile: MatrixTile, width: int, m: int, d: int, k: int, approximate: int) -> str:
    """The WGSL for x [m, k] (binding a) against W [2d, k] (binding b), `width` f16 per
    global load of either; approximate: 1 erf GELU, 2 tanh."""
    half = tile.bn // 2
    kind = load_type(width)
    declarations = f"""struct Params {{ has_bias: u32 }}
@group(0) @binding(0) var<storage, read> a: array<{kind}>;
@group(0) @binding(1) var<storage, read> b: array<{kind}>;
@group(0) @binding(2) var<storage, read> bias: array<f16>;
@group(0) @binding(3) var<storage, read_write> out: array<f16>;
@group(0) @binding(4) var<uniform> params: Params;

{contiguous_load("a", width, f"{m}u", f"{k}u", f"{k}u", "0u", checked=False)}

// Tile column j of workgroup column t: value row t * {half} + j, or for j >= {half} the gate
// row {d} + t * {half} + j - {half}.
fn load_b(row: u32, col: u32) -> {kind} {{
  let j = row % {tile.bn}u;
  let first = row / {tile.bn}u * {half}u;
  let w_row = select({d}u + first + j - {half}u, first + j, j < {half}u);
  return b[(w_row * {k}u + col) / {width}u];
}}

{_gelu(approximate)}

fn store_pair(row: u32, col: u32, value: f32, gate: f32) {{
  var v = value;
  var g = gate;
  if (params.has_bias != 0u) {{
    v += f32(bias[col]);
    g += f32(bias[{d}u + col]);
  }}
  out[row * {d}u + col] = f16(v * gelu(g));
}}"""
    return kernel_source(tile, Operand("a", False, width), Operand("b", False, width),
                         declarations=declarations, setup="",
                         extent=(f"{m}u", f"{2 * d}u", f"{k}u"),
                         comment=f"GEGLU, {m} x {k} by [2 x {d}, {k}]", aligned=True,
                         pairs=True)


def record_gemm_geglu(x: Buffer[Any], w: Buffer[Any], bias: Buffer[Any], out: Buffer[Any], *,
                      has_bias: bool, m: int, d: int, k: int, tile: MatrixTile,
                      approximate: int) -> None:
    """Record out [m, d] = GEGLU of x [m, k] through w [2d, k] (+ bias [2d] if has_bias; a
    placeholder otherwise) in `tile`, which `fits` the shape (the caller checked)."""
    width = load_width(tile, k, (0,))
    kernel = Kernel.generated("nn/geglu_subgroup_matrix", source, on_device(tile, x.device),
                              width, m, d, k, approximate)
    kernel.dispatch((2 * d // tile.bn, math.ceil(m / tile.bm), 1), x, w, bias, out,
                    has_bias=int(has_bias))
