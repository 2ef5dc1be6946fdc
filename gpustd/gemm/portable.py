"""The portable GEMM: shaders/linalg/gemm.wgsl (plus gemm_splitk.wgsl) specialized and recorded.

record_gemm records the configuration it is given (tile, K splits, main loop); choosing one is
gpustd/gemm/dispatch.py's work. gemm_kernel and dispatch write gemm.wgsl's override constants
and params once, for every user of the shader (nn.linear_geglu's fused gate too).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from gpucore import Buffer, Device, Kernel

from .plan import K_CHUNK, TILES, BatchPlan, Tile, k_partition

__all__ = ["B_FORMATS", "dispatch", "finish_kernel", "gemm_kernel", "no_bias", "record_gemm"]

# GGML formats gemm.wgsl reads B in (the part that loads it), besides floats
B_FORMATS = {"q8_0": "quant/gemm_b_q8_0", "q4_k": "quant/gemm_b_q4_k",
             "q5_0": "quant/gemm_b_q5_0"}


def gemm_kernel(dtype: np.dtype, tile: Tile, *, trans_a: bool, trans_b: bool, vec_a: bool,
                vec_b: bool, split: bool = False, paired: bool = False, geglu: int = 0,
                b_format: str = "", layout_in_params: bool = False) -> Kernel:
    """gemm.wgsl for `dtype` operands and this tile and layout. vec_*: the operand is read
    in vec4s (its contiguous dimension is a multiple of 4); split: write raw f32 partial
    sums (split-K); paired: the main loop's paired shape; geglu: 1 (erf) or 2 (tanh) applies
    GEGLU's gate in the epilogue (columns [0, n) times gelu of columns [n, 2n)); b_format:
    B is a weight (n x k, trans_b) of GGML blocks in this format ("q8_0", "q4_k",
    "q5_0": see B_FORMATS), dequantized as the tiles load it, instead of floats;
    layout_in_params: the kernel reads trans_a and trans_b from dispatch's params, one
    kernel for every layout."""
    types: dict[str, Any] = {"T": dtype, "O": np.float32 if split else dtype}
    if not vec_a:
        types["AV"] = "T"
    if not vec_b:
        types["BV"] = "T"
    constants: dict[str, float] = {
        "WX": tile.wx, "WY": tile.wy, "BK": tile.bk, "TM": tile.tm, "TN": tile.tn,
        "TRANS_A": int(trans_a), "TRANS_B": int(trans_b), "VEC_A": int(vec_a),
        "VEC_B": int(vec_b), "SPLIT": int(split), "PAIRED": int(paired)}
    if geglu:
        constants["GEGLU"] = geglu
    if layout_in_params:
        del constants["TRANS_A"], constants["TRANS_B"]
        constants["LAYOUT_IN_PARAMS"] = 1
    b_part = B_FORMATS[b_format] if b_format else "linalg/gemm_b"
    return Kernel.cached("linalg/gemm", parts=("linalg/register_tile", b_part),
                         constants=constants, types=types)


def dispatch(kernel: Kernel, grid: tuple[int, int, int], a: Buffer[Any], b: Buffer[Any],
             bias: Buffer[Any], out: Buffer[Any], *, m: int, n: int, k: int,
             k_tiles_per_split: int, has_bias: int = 0, alpha: float = 1.0, beta: float = 0.0,
             splits: int = 1, c_total: int | None = None, a_base: int = 0, a_outer: int = 0,
             a_inner: int = 0, b_base: int = 0, b_outer: int = 0, b_inner: int = 0,
             c_base: int = 0, inner: int = 1, z_base: int = 0, trans_a: bool = False,
             trans_b: bool = False) -> None:
    """One dispatch of a gemm_kernel over `grid` (x: column tiles, y: row tiles, z: batch
    entries times K splits). The defaults are one matrix, unsplit: batch entry z reads A at
    a_base + (z // inner) a_outer + (z % inner) a_inner elements (B alike) and writes C at
    c_base + z m n; has_bias 0 none, 1 one per column, 2 one per row; trans_a, trans_b:
    the layout, for a kernel that reads it from the params."""
    kernel.dispatch(grid, a, b, bias, out, m=m, n=n, k=k, a_base=a_base, a_outer=a_outer,
                    a_inner=a_inner, b_base=b_base, b_outer=b_outer, b_inner=b_inner,
                    c_base=c_base, inner=inner, z_base=z_base, alpha=alpha, beta=beta,
                    has_bias=has_bias, splits=splits, k_tiles_per_split=k_tiles_per_split,
                    c_total=m * n if c_total is None else c_total, trans_a=int(trans_a),
                    trans_b=int(trans_b))


def finish_kernel(dtype: np.dtype) -> Kernel:
    return Kernel.cached("linalg/gemm_splitk", types={"T": dtype})


def no_bias(device: Device, dtype: npt.DTypeLike) -> Buffer[Any]:
    """A one-element buffer bound where no bias is given (has_bias = 0 keeps it unread)."""
    return device.keep(("gemm no bias", np.dtype(dtype)), lambda: Buffer(
        1, dtype, device=device, read_only=True, label="no bias"))


def record_gemm(a: Buffer[Any], b: Buffer[Any], c: Buffer[Any], bias: Buffer[Any] | None, *,
                m: int, n: int, k: int, trans_a: bool, trans_b: bool, alpha: float, beta: float,
                plan: BatchPlan, tile: Tile, splits: int, paired: bool,
                bias_rows: bool = False, b_format: str = "") -> None:
    """Record C = alpha op(A) op(B) + beta C + bias for every batch entry (no validation) in
    `tile`, at most `splits` K splits (k_partition's) and the `paired` main loop or not.

    bias: (n,) added along rows, or with `bias_rows` (m,), one value per row (a 1x1 conv's
    output channels). b_format: B holds GGML blocks (gemm_kernel). A tile whose workgroup
    memory the device lacks runs as 64 x 64."""
    if m == 0 or n == 0 or plan.count == 0:
        return
    device = c.device
    per_group = plan.outer * plan.inner
    total = plan.count * m * n
    splits, chunks_per_split = k_partition(splits, k, total, device)
    if tile.workgroup_bytes > device.limits["max-compute-workgroup-storage-size"]:
        tile = TILES["64x64"]
    per_split = chunks_per_split * K_CHUNK // tile.bk
    # vec4 reads need the contiguous dimension (and so every row start) 16-byte aligned.
    vec_a = k > 0 and (m if trans_a else k) % 4 == 0
    vec_b = k > 0 and (k if trans_b else n) % 4 == 0
    # On a CPU adapter a float32 product takes the split-K kernels with one split or more:
    # llvmpipe compiles each kernel at its first dispatch (0.4-0.5 s of CPU), and the unsplit
    # kernel is one more per layout. One split's raw sum is the unsplit kernel's (never -0:
    # its accumulators start at +0), and gemm_splitk finishes it as the unsplit epilogue does,
    # alpha * sum + beta * c + bias: the same bits (bench/NOTES.md, a first picture on CPUs).
    # There the layout comes from the params too: one kernel for the three layouts a model
    # uses (0.3 s of compiling each), the same loads, sums and bits.
    cpu = device.info.type == "cpu"
    split = splits > 1 or (k > 0 and c.dtype == np.float32 and cpu)
    kernel = gemm_kernel(c.dtype, tile, trans_a=trans_a, trans_b=trans_b, vec_a=vec_a,
                         vec_b=vec_b, split=split, paired=paired, b_format=b_format,
                         layout_in_params=cpu and not b_format)
    has_bias = 0 if bias is None else 2 if bias_rows else 1
    bias_buffer = bias if bias is not None else no_bias(device, c.dtype)
    # Split-K: every split writes raw f32 sums to its own slab; gemm_splitk adds them.
    out = Buffer.empty(splits * total, np.float32, device=device) if split else c
    max_z = device.limits["max-compute-workgroups-per-dimension"]
    grid_xy = (math.ceil(n / tile.bn), math.ceil(m / tile.bm))
    for g, (a_base, b_base) in enumerate(plan.groups):
        for z_base, z_count in _chunks(per_group * splits, max_z):
            dispatch(kernel, (*grid_xy, z_count), a, b, bias_buffer, out, m=m, n=n, k=k,
                     a_base=a_base, a_outer=plan.outer_strides[0],
                     a_inner=plan.inner_strides[0], b_base=b_base,
                     b_outer=plan.outer_strides[1], b_inner=plan.inner_strides[1],
                     c_base=g * per_group * m * n, inner=plan.inner, z_base=z_base,
                     alpha=alpha, beta=beta, has_bias=has_bias, splits=splits,
                     k_tiles_per_split=per_split, c_total=total, trans_a=trans_a,
                     trans_b=trans_b)
    if split:
        finish = finish_kernel(c.dtype)
        finish.dispatch(finish.groups_for(total), out, bias_buffer, c, total=total, n=n,
                        splits=splits, alpha=alpha, beta=beta, has_bias=has_bias, m=m)


def _chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(size, total - start)) for start in range(0, total, size)]
