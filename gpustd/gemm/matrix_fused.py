"""A linear layer and the elementwise pass after it, on the matrix units in one GEMM whose
epilogue applies it: y = x W^T + b for x [m, k] and W [n, k] (as stored), then

- "gelu": out[:, column:column + n] = gelu(y) in rows of `stride` elements: the DiTs'
  feed-forward `net.0` and FLUX's single-stream `proj_mlp`, whose [m, n] projection was
  stored, read and stored again by nn.gelu (and in the single blocks copied once more into
  the concatenation that proj_out reads);
- "gated": out = clip(residual + gate[row / length] * y, +-65504), NaN kept: adaLN-Zero's gated
  residual of a float16 stream after the feed-forward's `net.2` or a single block's proj_out,
  whose y was stored and read again by the gated add; the gate's n columns from `at` of rows
  `width` long, so it is read in place from the adaLN linear's output.

y is rounded to f16 before either, as the two passes round the GEMM's output, the GELU is
shaders/nn/gelu.wgsl's and the gated add the f32 expression of the DiTs' kernel: the two
passes' arithmetic with the same tile. The same bits on lavapipe; on an H200 under Dawn the
compiler evaluates tanh and the multiply-add differently in this epilogue, one f16 ulp apart
(the GELU's far-negative tail, below 1e-4, a few of its tiny ulps). Shapes that fill the tile
only, K unsplit; elsewhere `fits` says no and gpustd.nn.linear takes the two passes.
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
from .matrix_tile import on_device
from .matrix_units import aligned, split_k

__all__ = ["fits", "record_gemm_gated_add", "record_gemm_gelu", "source"]


def fits(tile: MatrixTile, m: int, n: int, k: int) -> bool:
    """Whether the one-GEMM linear + epilogue takes [m, k] x [n, k]^T in `tile`: the product
    filling the tile and K unsplit (a product split_k would split takes the two passes)."""
    return aligned(tile, m, n, k) and split_k(m, n, k, 1, tile.acc) == k


def _store(epilogue: tuple[Any, ...], n: int) -> tuple[str, str]:
    """(extra bindings, store_c) of an epilogue: ("gelu", approximate, stride, column) or
    ("gated", length, width, at)."""
    if epilogue[0] == "gelu":
        _, approximate, stride, column = epilogue
        return "", f"""const OP = {approximate}u;
{shader_source("nn/gelu")}

fn store_c(row: u32, col: u32, value: f32) {{
  out[row * {stride}u + {column}u + col] = f16(gelu(f32(f16(biased(col, value)))));
}}"""
    _, length, width, at = epilogue
    bindings = """@group(0) @binding(4) var<storage, read> residual: array<f16>;
@group(0) @binding(5) var<storage, read> gate: array<f16>;"""
    return bindings, f"""fn store_c(row: u32, col: u32, value: f32) {{
  let y = f32(f16(biased(col, value)));
  let at = row * {n}u + col;
  let sum = f32(residual[at]) + f32(gate[row / {length}u * {width}u + {at}u + col]) * y;
  // NaN kept, as torch's clamp keeps it (a GPU's max drops it); tested on the bits
  let nan = (bitcast<u32>(sum) & 0x7fffffffu) > 0x7f800000u;
  out[at] = f16(select(min(max(sum, -65504.0), 65504.0), sum, nan));
}}"""


def source(tile: MatrixTile, width: int, m: int, n: int, k: int,
           epilogue: tuple[Any, ...]) -> str:
    """The WGSL for x [m, k] (binding a) against W [n, k] (binding b), `width` f16 per
    global load of either, with `epilogue`: ("gelu", approximate (1 erf, 2 tanh), stride,
    column) or ("gated", length: rows per gate row, width: a gate row's elements, at: the
    column of the row where the gate starts)."""
    kind = load_type(width)
    bindings, store = _store(epilogue, n)
    params = 6 if bindings else 4
    declarations = f"""struct Params {{ has_bias: u32 }}
@group(0) @binding(0) var<storage, read> a: array<{kind}>;
@group(0) @binding(1) var<storage, read> b: array<{kind}>;
@group(0) @binding(2) var<storage, read> bias: array<f16>;
@group(0) @binding(3) var<storage, read_write> out: array<f16>;
{bindings}
@group(0) @binding({params}) var<uniform> params: Params;

{contiguous_load("a", width, f"{m}u", f"{k}u", f"{k}u", "0u", checked=False)}

{contiguous_load("b", width, f"{n}u", f"{k}u", f"{k}u", "0u", checked=False)}

fn biased(col: u32, value: f32) -> f32 {{
  if (params.has_bias != 0u) {{
    return value + f32(bias[col]);
  }}
  return value;
}}

{store}"""
    return kernel_source(tile, Operand("a", False, width), Operand("b", False, width),
                         declarations=declarations, setup="", extent=(f"{m}u", f"{n}u", f"{k}u"),
                         comment=f"linear + {epilogue[0]}, {m} x {k} by [{n}, {k}]",
                         aligned=True)


def _kernel(tile: MatrixTile, m: int, n: int, k: int, epilogue: tuple[Any, ...]) -> Kernel:
    width = load_width(tile, k, (0,))
    return Kernel.generated(f"linalg/gemm_{epilogue[0]}_subgroup_matrix", source, tile, width,
                            m, n, k, epilogue)


def record_gemm_gelu(x: Buffer[Any], w: Buffer[Any], bias: Buffer[Any], out: Buffer[Any], *,
                     has_bias: bool, m: int, n: int, k: int, tile: MatrixTile, approximate: int,
                     stride: int, column: int) -> None:
    """Record out[:, column:column + n] (rows of `stride`) = gelu(x [m, k] w [n, k]^T + bias
    [n] if has_bias; a placeholder otherwise) in `tile`, which `fits` the shape (the caller
    checked)."""
    kernel = _kernel(on_device(tile, x.device), m, n, k, ("gelu", approximate, stride, column))
    kernel.dispatch((n // tile.bn, math.ceil(m / tile.bm), 1), x, w, bias, out,
                    has_bias=int(has_bias))


def record_gemm_gated_add(x: Buffer[Any], w: Buffer[Any], bias: Buffer[Any], out: Buffer[Any],
                          residual: Buffer[Any], gate: Buffer[Any], *, has_bias: bool, m: int,
                          n: int, k: int, tile: MatrixTile, length: int, gate_width: int,
                          gate_at: int) -> None:
    """Record out [m, n] = clip(residual + gate[row // length, gate_at:gate_at + n] * (x
    [m, k] w [n, k]^T + bias)) (residual [m, n], gate [m / length, gate_width]) in `tile`,
    which `fits` the shape."""
    kernel = _kernel(on_device(tile, x.device), m, n, k,
                     ("gated", length, gate_width, gate_at))
    kernel.dispatch((n // tile.bn, math.ceil(m / tile.bm), 1), x, w, bias, out, residual, gate,
                    has_bias=int(has_bias))
