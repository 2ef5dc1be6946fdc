"""Lab kernel (not routed by gpustd.nn.conv2d): f16 3x3 conv2d (stride 1, padding 1) on the
matrix units from a halo tile: the input rows a tile of output pixels needs are read from
global memory once per block of 16 input channels, and the patch matrix's fragments are
loaded straight out of them. tools/conv_ceiling.py times it (the `halo` column) beside the
shipped kernel and cuDNN; bench/NOTES.md ("A halo-tile conv") has the numbers: within 10% of
the shipped kernel at SDXL's shapes, its products alone at cuDNN's speed, the staging the gap.

The implicit-GEMM conv (gpustd/nn/_conv_subgroup_matrix.py) gathers each patch element from
global memory: 9 reads of every input value per output-channel tile, one f16 per load, and
as many stores into workgroup memory. Its time goes there: with the same loads served from
the caches it runs 1.4-2.4x faster (bench/NOTES.md, "the conv's bound"). Here a workgroup
owns BM = 64 output channels x 128 consecutive output pixels (TR rows of TW pixels, in one
image) and walks the input channels 16 at a time:

- the weights' [64, 16 x 9] slice, contiguous in each row of the weight as stored, is staged
  tap-major: sh_a[row, tap * 16 + channel];
- the 16 channels' (TR + 2) x (TW + 2) halo is staged pixel-major: sh_x[(row, pixel),
  channel], CS elements per pixel (16 channels + 8 of padding, 48 bytes). Zero outside the
  image, which is the padding;
- per tap (ky, kx), a subgroup's fragment of the patch matrix (16 channels x 16 pixels of one
  output row) is the halo's 16 pixels from (r + ky, q + kx), read column-major with stride
  CS: every offset is a multiple of CS, so 16-byte aligned. (An H100 through Dawn loads a
  row-major fragment at an offset that is not 16-byte aligned from the aligned address
  below it, silently: the pixel-major layout is what makes the 3 horizontal taps loadable.)

4 subgroups, each 32 output channels x 64 pixels (2 x 4 fragments of f32 accumulators). The
epilogue is _conv_matrix_source's store_c (bias, the residual `add`, NCHW f16 out).
Shapes: C_in a multiple of 16, C_out of 64, W dividing 128 or a multiple of it, H W a
multiple of 128 (`fits`); upsample reads x upsampled 2x (nearest) as conv2d's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gpucore import Kernel
from gpustd import Tensor
from gpustd.nn._conv_matrix_source import _STORE, bindings
from gpustd.nn._util import dummy

__all__ = ["conv2d_halo", "fits", "source", "tap_major"]

BM, BN, CB = 64, 128, 16  # output channels, output pixels, input channels per step
_CS = CB + 8  # halo elements per pixel
_AS = 9 * CB + 8  # staged weight elements per output channel
_LEFT = "subgroup_matrix_left<f16, 16, 16>"
_RIGHT = "subgroup_matrix_right<f16, 16, 16>"
_RESULT = "subgroup_matrix_result<f32, 16, 16>"


def fits(x_shape: tuple[int, ...], weight_shape: tuple[int, ...], *, stride: tuple[int, int],
         padding: tuple[int, int], dilation: tuple[int, int], groups: int,
         upsample: int = 1) -> bool:
    """Whether conv2d's arguments (validated) are a conv this kernel computes."""
    n, c_in, h, w = x_shape
    h, w = h * upsample, w * upsample
    c_out, _, kh, kw = weight_shape
    return ((kh, kw) == (3, 3) and stride == (1, 1) and padding == (1, 1)
            and dilation == (1, 1) and groups == 1 and c_in % CB == 0 and c_out % BM == 0
            and w % 16 == 0 and (BN % w == 0 or w % BN == 0) and (h * w) % BN == 0 and n > 0)


def source(tw: int, upsample: bool, direct: bool = False) -> str:
    """The WGSL for output tiles of 128 // tw rows of tw pixels. direct: the weight comes
    tap-major ([C_out, 9, C_in], `tap_major`) and each subgroup loads its weight fragments
    straight from global memory: no weight staging at all, and slower (H100: 2x320x128x128
    0.792 against 0.729 ms staged; bench/NOTES.md)."""
    tr = BN // tw
    hw = tw + 2  # halo pixels per row
    halo = (tr + 2) * hw
    taps = []
    for t in range(9):
        ky, kx = divmod(t, 3)
        if direct:
            body = [f"let a{i} = subgroupMatrixLoad<{_LEFT}>(&weight, a_at{i} + {t}u * "
                    f"params.c_in + cb, false, params.k_total);" for i in range(2)]
        else:
            body = [f"let a{i} = subgroupMatrixLoad<{_LEFT}>(&sh_a, a_at + "
                    f"{16 * i * _AS + 16 * t}u, false, {_AS}u);" for i in range(2)]
        for f in range(4):
            body.append(f"let b{f} = subgroupMatrixLoad<{_RIGHT}>(&sh_x, b_at{f} + "
                        f"{(ky * hw + kx) * _CS}u, true, {_CS}u);")
            body += [f"c{i}{f} = subgroupMatrixMultiplyAccumulate(a{i}, b{f}, c{i}{f});"
                     for i in range(2)]
        taps.append("    {\n" + "\n".join("      " + line for line in body) + "\n    }")
    b_at = []
    for f in range(4):  # fragment f of subgroup column wn: pixels 64 wn + 16 f of the tile
        b_at.append(f"  let p{f} = wn * 64u + {16 * f}u;\n"
                    f"  let b_at{f} = ((p{f} / {tw}u) * {hw}u + p{f} % {tw}u) * {_CS}u;")
    epilogue = []
    for i in range(2):
        for f in range(4):
            epilogue += [
                f"  subgroupMatrixStore(&sh_c, sg * 256u, c{i}{f}, false, 16u);",
                "  workgroupBarrier();",
                "  for (var e = lane; e < 256u; e += 32u) {",
                f"    store_c(co0 + wm * 32u + {16 * i}u + e / 16u, "
                f"p_first + wn * 64u + {16 * f}u + e % 16u, sh_c[sg * 256u + e]);",
                "  }",
                "  workgroupBarrier();"]
    nl = "\n"
    a_at = ("\n".join(f"  let a_at{i} = (co0 + wm * 32u + {16 * i}u) * params.k_total;"
                       for i in range(2)) if direct else f"  let a_at = wm * {32 * _AS}u;")
    staging = _Staging.of(halo, hw, upsample, direct)
    return f"""enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
// Generated by gpustd/nn/_conv_halo.py: 3x3 conv, {BM} channels x {tr} rows of {tw} pixels
// a workgroup{", x upsampled 2x" if upsample else ""}.
{bindings(False, 1 if direct else 4, 0)}

{"" if direct else f"var<workgroup> sh_a: array<f16, {BM * _AS}>;"}
var<workgroup> sh_x: array<f16, {halo * _CS}>;
var<workgroup> sh_c: array<f32, 1024>;

{_STORE}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) tid: u32,
        @builtin(subgroup_id) sg: u32,
        @builtin(subgroup_invocation_id) lane: u32) {{
  let co0 = wid.y * {BM}u;
  let p_first = wid.x * {BN}u;
  let hw_in = params.h * params.w;
  let image = p_first / hw_in;
  let y0 = p_first % hw_in / params.w;
  let x0 = p_first % params.w;
  let wm = sg / 2u;
  let wn = sg % 2u;
{a_at}
{nl.join(b_at)}
{nl.join(f"  var c{i}{f} = {_RESULT}();" for i in range(2) for f in range(4))}
{staging.setup}
  for (var cb = 0u; cb < params.c_in; cb += {CB}u) {{
    workgroupBarrier();
    {{
{staging.loads}
    }}
{staging.stores}
    workgroupBarrier();
{nl.join(taps)}
  }}
{nl.join(epilogue)}
}}
"""


@dataclass(frozen=True)
class _Staging:
    """One block's staging: `setup` (once: register declarations, each invocation's halo
    positions), `loads` (global -> registers, for the block `cb` names, every load issued
    before the first store) and `stores` (registers -> workgroup memory). Issuing the next
    block's loads before this block's products instead (a register prefetch) was slower:
    2x320x128x128 -> 320 0.830 against 0.752 ms."""

    setup: str
    loads: str
    stores: str

    @staticmethod
    def of(halo: int, hw: int, upsample: bool, direct: bool) -> _Staging:
        """The weights' [64, 144] slice, tap-major into sh_a: invocation t takes half t % 2
        of row t / 2 (18 vec4 loads, 72 stores at offsets fixed when generated). The 16
        channels' halo into sh_x: invocation t takes halo positions t, t + 128, ... (row and
        column decoded once) in every channel."""
        setup: list[str] = []
        loads: list[str] = []
        stores: list[str] = []
        per = 9 * CB // 2  # weight elements per invocation
        if not direct:
            setup = [f"  let a_put = tid / 2u * {_AS}u + tid % 2u * {per // 9}u;"]
            setup += [f"  var w{i} = vec4<f16>();" for i in range(per // 4)]
            loads = [f"      let w_at = ((co0 + tid / 2u) * params.k_total + cb * 9u) / 4u"
                     f" + tid % 2u * {per // 4}u;"]
            loads += [f"      w{i} = weight[w_at + {i}u];" for i in range(per // 4)]
            for k in range(per):
                i, j = divmod(k, 4)
                stores.append(f"    sh_a[a_put + {k % 9 * CB + k // 9}u] = w{i}[{j}];")
        plane = "(params.h >> 1u) * (params.w >> 1u)" if upsample else "params.h * params.w"
        setup.append(f"  let plane = {plane};")
        loads.append("      let chan = (image * params.c_in + cb) * plane;")
        spots = range(math.ceil(halo / 128))
        for j in spots:
            at = (f"(iy{j} >> 1u) * (params.w >> 1u) + (ix{j} >> 1u)" if upsample
                  else f"iy{j} * params.w + ix{j}")
            inside = f"f{j} < {halo}u && " if 128 * (j + 1) > halo else ""
            setup += [f"  let f{j} = tid + {128 * j}u;",
                      f"  let iy{j} = y0 + f{j} / {hw}u - 1u;",  # -1 wraps above h
                      f"  let ix{j} = x0 + f{j} % {hw}u - 1u;",
                      f"  let ok{j} = {inside}iy{j} < params.h && ix{j} < params.w;",
                      f"  let at{j} = {at};"]
        for c in range(CB):
            for j in spots:
                setup.append(f"  var v{j}_{c} = f16();")
                loads.append(f"      if (ok{j}) {{ v{j}_{c} = x[chan + at{j} + {c}u * plane]; }}")
                guard = f"if (f{j} < {halo}u) " if 128 * (j + 1) > halo else ""
                stores.append(f"    {guard}{{ sh_x[f{j} * {_CS}u + {c}u] = v{j}_{c}; }}")
        return _Staging("\n".join(setup), "\n".join(loads), "\n".join(stores))


def _kernel(tw: int, upsample: bool, direct: bool) -> Kernel:
    return Kernel.generated("tools/conv_halo", source, tw, upsample, direct)


def tap_major(weight: np.ndarray) -> np.ndarray:
    """[C_out, C_in, 3, 3] -> [C_out, 9 C_in], (tap, channel) along each row: `direct`'s
    weight."""
    return np.ascontiguousarray(weight.transpose(0, 2, 3, 1)).reshape(weight.shape[0], -1)


def conv2d_halo(x: Tensor, weight: Tensor, bias: Tensor | None, *, add: Tensor | None = None,
                add_mode: int = 0, upsample: int = 1, direct: bool = False) -> Tensor:
    """conv2d of x [N, C_in, H, W] by weight [C_out, C_in, 3, 3] (f16; stride 1, padding 1)
    for the shapes `fits` accepts, validated by conv2d; bias [C_out] or None, add as
    conv2d's (`add_mode` 1: the output's shape, 2: [N, C_out, 1, 1]); upsample 2: x read
    upsampled 2x (nearest); direct: weight is tap_major's [C_out, 9 C_in] (see `source`)."""
    n, c_in, h, w = x.shape
    h, w = h * upsample, w * upsample
    c_out = weight.shape[0]
    out = Tensor.empty((n, c_out, h, w), np.float16, device=x.device)
    pixels = n * h * w
    _kernel(min(w, BN), upsample == 2, direct).dispatch(
        (pixels // BN, c_out // BM, 1), x, weight, bias if bias is not None else dummy(x),
        add if add is not None else dummy(x), out, c_in=c_in, h=h, w=w, c_out=c_out, ho=h,
        wo=w, k_total=9 * c_in, pixels=pixels, stride_h=1, stride_w=1, pad_h=1, pad_w=1,
        dil_h=1, dil_w=1, has_bias=int(bias is not None), add_mode=add_mode, split_steps=0,
        leaky=0, slope=1.0, scale=1.0)
    return out
