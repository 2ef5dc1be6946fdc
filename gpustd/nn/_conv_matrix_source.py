"""The WGSL of the f16 implicit-GEMM conv2d on the matrix units (gpustd/nn/_conv_subgroup_matrix.py
dispatches it): its bindings and Params, the patch gather (im2col index, the prologue, the 2x
upsampled read), the epilogue's store and `source`, which hands them to
gpustd/gemm/matrix_codegen.py's generator.
"""

from __future__ import annotations

from ..gemm import matrix_codegen as sm

__all__ = ["bindings", "source"]

_PARAMS = """struct Params {
    c_in: u32, h: u32, w: u32, c_out: u32, ho: u32, wo: u32, k_total: u32, pixels: u32,
    stride_h: u32, stride_w: u32, pad_h: u32, pad_w: u32, dil_h: u32, dil_w: u32,
    has_bias: u32, add_mode: u32, split_steps: u32, x_offset: u32, leaky: u32, slope: f32,
    scale: f32,
}"""


def _gather(kh: int, kw: int, aligned: bool, prologue: int = 0, upsample: bool = False) -> str:
    """load_b(k, pixel): one patch element for this invocation's pixel (decoded in setup).
    aligned: K and the pixels fill the tile, so only the image border is checked.
    prologue: 0 none, 1 the input read as (x - t.x) * t.y + t.z, t = norm[image * c_in +
    channel] (a GroupNorm, gpustd/nn/prologue.py), 2 the same then SiLU; in f32, inside the
    image only (the padding is that of the mapped input: zero). upsample: x read upsampled
    2x, nearest (params.h, params.w the upsampled size)."""
    check = "" if aligned else "if (k >= params.k_total || !pix_ok) {{ return f16(); }}\n  "
    at = "x_base + (ci * params.h + iy) * params.w + ix"
    if upsample:
        at = "x_base + (ci * (params.h >> 1u) + (iy >> 1u)) * (params.w >> 1u) + (ix >> 1u)"
    value = f"return x[{at}];"
    if prologue:
        silu = "\n  y = y / (1.0 + exp(-y));" if prologue == 2 else ""
        value = f"""let v = f32(x[{at}]);
  let t = norm[norm_base + ci];
  var y = fma(v - t.x, t.y, t.z);{silu}
  return f16(y);"""
    return f"""var<private> pix_ok: bool;
var<private> iy0: i32;
var<private> ix0: i32;
var<private> x_base: u32;
var<private> norm_base: u32;

fn load_b(k: u32, pixel: u32) -> f16 {{
  {check}let ci = k / {kh * kw}u;
  let ky = k % {kh * kw}u / {kw}u;
  let kx = k % {kw}u;
  let iy = u32(iy0 + i32(ky * params.dil_h));
  let ix = u32(ix0 + i32(kx * params.dil_w));
  if (iy >= params.h || ix >= params.w) {{ return f16(); }}  // negative wraps above
  {value}
}}"""


_DECODE = """  pix_ok = col_b < params.pixels;
  let hw_out = params.ho * params.wo;
  let image = col_b / hw_out;
  let oy = col_b % hw_out / params.wo;
  let ox = col_b % params.wo;
  iy0 = i32(oy * params.stride_h) - i32(params.pad_h);
  ix0 = i32(ox * params.stride_w) - i32(params.pad_w);
  norm_base = image * params.c_in;
  x_base = norm_base * params.h * params.w + params.x_offset;"""


def _decode(upsample: bool) -> str:
    """The setup: the pixel's image and input origin (x's own size when upsampled)."""
    if not upsample:
        return _DECODE
    return _DECODE.replace("params.h * params.w +", "(params.h >> 1u) * (params.w >> 1u) +")


# The prologue's table (prologue.ConvPrologue.table), bound after `out`.
_NORM = "@group(0) @binding(5) var<storage, read> norm: array<vec4<f32>>;"


def bindings(split: bool, width_w: int, prologue: int) -> str:
    """The kernel's bindings (and Params): x, weight, bias, add, out, [norm,] params."""
    params = 6 if prologue else 5
    return f"""{_PARAMS}
@group(0) @binding(0) var<storage, read> x: array<f16>;
@group(0) @binding(1) var<storage, read> weight: array<{sm.load_type(width_w)}>;
@group(0) @binding(2) var<storage, read> bias: array<f16>;
@group(0) @binding(3) var<storage, read> add: array<f16>;
@group(0) @binding(4) var<storage, read_write> out: array<{"f32" if split else "f16"}>;
{_NORM if prologue else ""}
@group(0) @binding({params}) var<uniform> params: Params;"""


_STORE = """fn store_c(row: u32, col: u32, value: f32) {
  let hw_out = params.ho * params.wo;
  let image = col / hw_out;
  let idx = (image * params.c_out + row) * hw_out + col % hw_out;
  var v = value;
  if (params.has_bias != 0u) { v += f32(bias[row]); }
  if (params.leaky != 0u) { v = max(v, v * params.slope) * params.scale; }
  if (params.add_mode == 1u) { v += f32(add[idx]); }
  if (params.add_mode == 2u) { v += f32(add[image * params.c_out + row]); }
  out[idx] = f16(v);
}"""


# The split kernel's store: the same body into f32 slab `split_id` (dispatched with has_bias
# and add_mode 0, the finish adds them; kept so that every binding stays in use).
_STORE_SPLIT = _STORE.replace(
    "out[idx] = f16(v);", "out[split_id * params.pixels * params.c_out + idx] = v;")


def source(tile: sm.MatrixTile, kh: int, kw: int, width_w: int, split: bool = False,
           aligned: bool = False, prologue: int = 0, upsample: bool = False) -> str:
    """The WGSL of the implicit-GEMM conv for one tile and kernel size; width_w: f16 per
    load of the weight rows (K must be a multiple of it). split: K split over the grid's z
    (params.split_steps K steps each), f32 partial sums [splits, N, C_out, H, W] in `out`.
    aligned: C_out, K and the pixels are multiples of the tile's BM, BK and BN (`aligned`):
    no bound checks but the image border's. prologue: 0, or the ConvPrologue.kind applied
    to each gathered value (1 GroupNorm's affine map, 2 then SiLU; the table bound after
    `out`). upsample: x read upsampled 2x (nearest; params.h, params.w the upsampled
    size)."""
    weight = sm.Operand("a", False, width_w)
    patches = sm.Operand("b", True, 1)
    if not patches.fixed_column(tile):
        raise ValueError(f"conv tile {tile.name}: {tile.threads} invocations do not cover "
                         f"its {tile.bn} pixel columns evenly")
    declarations = f"""{bindings(split, width_w, prologue)}

{sm.contiguous_load("a", width_w, "params.c_out", "params.k_total", "params.k_total", "0u",
                    binding="weight", checked=not aligned)}

{_gather(kh, kw, aligned, prologue, upsample)}

{_STORE_SPLIT if split else _STORE}"""
    return sm.kernel_source(tile, weight, patches, declarations=declarations,
                            setup=_decode(upsample),
                            extent=("params.c_out", "params.pixels", "params.k_total"),
                            comment=f"implicit-GEMM conv2d {kh}x{kw}"
                            + (", split K" if split else "") + (", aligned" if aligned else "")
                            + (f", prologue {prologue}" if prologue else "")
                            + (", upsampled 2x" if upsample else ""),
                            split="params.split_steps" if split else "", aligned=aligned)
