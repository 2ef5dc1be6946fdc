"""A linear layer and its GELU on the matrix units: out[:, column:column + n] = gelu(x W^T + b)
for x [m, k] and W [n, k] (as stored), in one GEMM whose epilogue applies the GELU and writes
into a row of `stride` elements: the DiTs' feed-forward `net.0` and FLUX's single-stream
`proj_mlp`, whose [m, n] projection was stored, read and stored again by nn.gelu, and in the
single blocks copied once more into the concatenation that proj_out reads.

The value is rounded to f16 before the GELU, as the two passes round the GEMM's output, and
the GELU is shaders/nn/gelu.wgsl's: the same bits as nn.gelu(linear(x)) with the same tile.
Shapes that fill the tile only, K unsplit; elsewhere `fits` says no and gpustd.nn.linear_gelu
takes the two passes.
"""

from __future__ import annotations

import math
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
from .matrix_units import aligned, split_k

__all__ = ["fits", "record_gemm_gelu", "source"]


def fits(tile: MatrixTile, m: int, n: int, k: int) -> bool:
    """Whether the one-GEMM linear + GELU takes [m, k] x [n, k]^T in `tile`: the product
    filling the tile and K unsplit (a product split_k would split takes the two passes)."""
    return aligned(tile, m, n, k) and split_k(m, n, k, 1) == k


def source(tile: MatrixTile, width: int, m: int, n: int, k: int, approximate: int,
           stride: int, column: int) -> str:
    """The WGSL for x [m, k] (binding a) against W [n, k] (binding b), `width` f16 per
    global load of either, into out's rows of `stride` from `column`; approximate: 1 erf
    GELU, 2 tanh."""
    kind = load_type(width)
    declarations = f"""struct Params {{ has_bias: u32 }}
@group(0) @binding(0) var<storage, read> a: array<{kind}>;
@group(0) @binding(1) var<storage, read> b: array<{kind}>;
@group(0) @binding(2) var<storage, read> bias: array<f16>;
@group(0) @binding(3) var<storage, read_write> out: array<f16>;
@group(0) @binding(4) var<uniform> params: Params;

{contiguous_load("a", width, f"{m}u", f"{k}u", f"{k}u", "0u", checked=False)}

{contiguous_load("b", width, f"{n}u", f"{k}u", f"{k}u", "0u", checked=False)}

const OP = {approximate}u;
{shader_source("nn/gelu")}

fn store_c(row: u32, col: u32, value: f32) {{
  var v = value;
  if (params.has_bias != 0u) {{
    v += f32(bias[col]);
  }}
  out[row * {stride}u + {column}u + col] = f16(gelu(f32(f16(v))));
}}"""
    return kernel_source(tile, Operand("a", False, width), Operand("b", False, width),
                         declarations=declarations, setup="", extent=(f"{m}u", f"{n}u", f"{k}u"),
                         comment=f"linear + GELU, {m} x {k} by [{n}, {k}] into rows of "
                                 f"{stride} from {column}", aligned=True)


def record_gemm_gelu(x: Buffer[Any], w: Buffer[Any], bias: Buffer[Any], out: Buffer[Any], *,
                     has_bias: bool, m: int, n: int, k: int, tile: MatrixTile, approximate: int,
                     stride: int, column: int) -> None:
    """Record out[:, column:column + n] (rows of `stride`) = gelu(x [m, k] w [n, k]^T + bias
    [n] if has_bias; a placeholder otherwise) in `tile`, which `fits` the shape (the caller
    checked)."""
    width = load_width(tile, k, (0,))
    kernel = Kernel.generated("linalg/gemm_gelu_subgroup_matrix", source, tile, width, m, n, k,
                              approximate, stride, column)
    kernel.dispatch((n // tile.bn, math.ceil(m / tile.bm), 1), x, w, bias, out,
                    has_bias=int(has_bias))
