"""f16 conv2d on the matrix units: an implicit GEMM built by gpustd/gemm/matrix_codegen.py.

out[c_out, pixel] = weight[c_out, K] @ patches[K, pixel], K = c_in * kh * kw, pixels over
(image, y, x) of the output. The weight is the left operand, read as stored ([c_out, K]
row-major, 8 f16 per load when K allows); the patch matrix never exists: staging gathers
each K-step tile of it from the NCHW input by im2col index (zero outside the image, so any
stride, padding and dilation). Each invocation stages one fixed pixel column, so its image,
row and column are decoded once, not per K step. The epilogue adds the bias and the residual
`add` (of the output's shape, or one value per image and channel) as gpustd/nn/conv.py's f32
kernel does, and writes NCHW. One group only: conv.py keeps the portable kernel otherwise.
conv.py also asks the tuner (gpustd/nn/_conv_matrix_tuning.py) for the tile it passes here.
"""

from __future__ import annotations

import math

import numpy as np

from gpucore import Kernel

from .._tensor import Tensor
from ..gemm import matrix_codegen as sm
from ..gemm.matrix_units import available
from ..gemm.plan import MULTIPROCESSORS
from ._util import dummy

__all__ = ["CONV_TILES", "MIN_TILES", "applies", "choose_conv_tile", "conv2d_matrix", "source",
           "tile_count"]

_PARAMS = """struct Params {
    c_in: u32, h: u32, w: u32, c_out: u32, ho: u32, wo: u32, k_total: u32, pixels: u32,
    stride_h: u32, stride_w: u32, pad_h: u32, pad_w: u32, dil_h: u32, dil_w: u32,
    has_bias: u32, add_mode: u32,
}"""

# The gather needs threads % BN == 0 (fixed pixel columns), which every tile here satisfies.
CONV_TILES = {"128x128": sm.MatrixTile(4, 2, 2, 4), "64x64": sm.MatrixTile(2, 2, 2, 2),
              "32x32": sm.MatrixTile(1, 1, 2, 2)}
# Fewer 64 x 64 output tiles than this (two waves) and the portable kernel, which
# splits K, is as fast or faster (H100: 2x1280x16x16 -> 1280, 160 tiles: 0.66 ms either way;
# 2x1280x8x8 -> 1280: 0.21 ms portable, 0.48 ms here at best).
MIN_TILES = 2 * MULTIPROCESSORS


def tile_count(c_out: int, pixels: int, tile: sm.MatrixTile) -> int:
    """Output tiles (workgroups) of `tile` over c_out channels x pixels."""
    return math.ceil(c_out / tile.bm) * math.ceil(pixels / tile.bn)


def applies(x: Tensor, weight: Tensor, groups: int, out_hw: tuple[int, int]) -> bool:
    """Whether conv2d (arguments validated) runs here: f16, one group, a device with f16 ->
    f32 subgroup matrices, and an output of at least MIN_TILES 64 x 64 tiles within the grid."""
    pixels = x.shape[0] * out_hw[0] * out_hw[1]
    max_x = x.device.limits["max-compute-workgroups-per-dimension"]
    return (x.dtype == np.float16 and groups == 1 and x.size > 0 and weight.size > 0
            and tile_count(weight.shape[0], pixels, CONV_TILES["64x64"]) >= MIN_TILES
            and pixels <= max_x * CONV_TILES["64x64"].bn and available(x.device))


def choose_conv_tile(c_out: int, pixels: int) -> sm.MatrixTile:
    """128 x 128 tiles where they make two waves, else 64 x 64. H100 (Dawn, default
    toggles, 2026-11-23, tools/sm_sweep.py): 2x320x64x64 -> 320 0.445 ms at 64x64 against
    0.455 at 128x128, 0.617 at 32x32 and 0.701 for the portable kernel; 2x640x32x32 -> 640
    0.494 against 0.462, 0.630 and 0.663 (torch fp16 cuDNN: 0.087 and 0.097 ms). The
    patch gather, one f16 per load, is what keeps these below the GEMM's TFLOP/s."""
    big = CONV_TILES["128x128"]
    if (tile_count(c_out, pixels, big) >= 2 * MULTIPROCESSORS
            and math.ceil(pixels / big.bn) <= 65535):
        return big
    return CONV_TILES["64x64"]


def _gather(kh: int, kw: int) -> str:
    """load_b(k, pixel): one patch element for this invocation's pixel (decoded in setup)."""
    return f"""var<private> pix_ok: bool;
var<private> iy0: i32;
var<private> ix0: i32;
var<private> x_base: u32;

fn load_b(k: u32, pixel: u32) -> f16 {{
  if (k >= params.k_total || !pix_ok) {{ return f16(); }}
  let ci = k / {kh * kw}u;
  let ky = k % {kh * kw}u / {kw}u;
  let kx = k % {kw}u;
  let iy = u32(iy0 + i32(ky * params.dil_h));
  let ix = u32(ix0 + i32(kx * params.dil_w));
  if (iy >= params.h || ix >= params.w) {{ return f16(); }}  // negative wraps above
  return x[x_base + (ci * params.h + iy) * params.w + ix];
}}"""


_DECODE = """  pix_ok = col_b < params.pixels;
  let hw_out = params.ho * params.wo;
  let image = col_b / hw_out;
  let oy = col_b % hw_out / params.wo;
  let ox = col_b % params.wo;
  iy0 = i32(oy * params.stride_h) - i32(params.pad_h);
  ix0 = i32(ox * params.stride_w) - i32(params.pad_w);
  x_base = image * params.c_in * params.h * params.w;"""

_STORE = """fn store_c(row: u32, col: u32, value: f32) {
  let hw_out = params.ho * params.wo;
  let image = col / hw_out;
  let idx = (image * params.c_out + row) * hw_out + col % hw_out;
  var v = value;
  if (params.has_bias != 0u) { v += f32(bias[row]); }
  if (params.add_mode == 1u) { v += f32(add[idx]); }
  if (params.add_mode == 2u) { v += f32(add[image * params.c_out + row]); }
  out[idx] = f16(v);
}"""


def source(tile: sm.MatrixTile, kh: int, kw: int, width_w: int) -> str:
    """The WGSL of the implicit-GEMM conv for one tile and kernel size; width_w: f16 per
    load of the weight rows (K must be a multiple of it)."""
    weight = sm.Operand("a", False, width_w)
    patches = sm.Operand("b", True, 1)
    if not patches.fixed_column(tile):
        raise ValueError(f"conv tile {tile.name}: {tile.threads} invocations do not cover "
                         f"its {tile.bn} pixel columns evenly")
    declarations = f"""{_PARAMS}
@group(0) @binding(0) var<storage, read> x: array<f16>;
@group(0) @binding(1) var<storage, read> weight: array<{sm.load_type(width_w)}>;
@group(0) @binding(2) var<storage, read> bias: array<f16>;
@group(0) @binding(3) var<storage, read> add: array<f16>;
@group(0) @binding(4) var<storage, read_write> out: array<f16>;
@group(0) @binding(5) var<uniform> params: Params;

{sm.contiguous_load("a", width_w, "params.c_out", "params.k_total", "params.k_total", "0u",
                    binding="weight")}

{_gather(kh, kw)}

{_STORE}"""
    return sm.kernel_source(tile, weight, patches, declarations=declarations, setup=_DECODE,
                            extent=("params.c_out", "params.pixels", "params.k_total"),
                            comment=f"implicit-GEMM conv2d {kh}x{kw}")


def _kernel(tile: sm.MatrixTile, kh: int, kw: int, width_w: int) -> Kernel:
    return Kernel.generated("nn/conv2d_subgroup_matrix", source, tile, kh, kw, width_w)


def conv2d_matrix(x: Tensor, weight: Tensor, bias: Tensor | None, *, stride: tuple[int, int],
                  padding: tuple[int, int], dilation: tuple[int, int], out_hw: tuple[int, int],
                  add: Tensor | None = None, add_mode: int = 0,
                  tile: sm.MatrixTile) -> Tensor:
    """gpustd.nn.conv2d for f16 and one group (see `applies`), its arguments validated by
    conv2d: x [N, C_in, H, W], weight [C_out, C_in, kh, kw], bias [C_out] or None, add as
    conv2d's (`add_mode` 1: the output's shape, 2: [N, C_out, 1, 1]). f32 accumulation, in
    `tile` (conv2d asks the tuner; tests force one)."""
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    ho, wo = out_hw
    out = Tensor.empty((n, c_out, ho, wo), np.float16, device=x.device)
    pixels = n * ho * wo
    k_total = c_in * kh * kw
    width_w = sm.load_width(tile, k_total, ())
    _kernel(tile, kh, kw, width_w).dispatch(
        (math.ceil(pixels / tile.bn), math.ceil(c_out / tile.bm), 1),
        x, weight, bias if bias is not None else dummy(x), add if add is not None else dummy(x),
        out, c_in=c_in, h=h, w=w, c_out=c_out, ho=ho, wo=wo, k_total=k_total, pixels=pixels,
        stride_h=stride[0], stride_w=stride[1], pad_h=padding[0], pad_w=padding[1],
        dil_h=dilation[0], dil_w=dilation[1], has_bias=int(bias is not None),
        add_mode=add_mode)
    return out
