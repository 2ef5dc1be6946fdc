"""The GEMM's one entry for its callers (gpustd.linalg's gemm and matmul, QR, nn.linear): which
kernel runs (the matrix units for f16 where the device has them, else gemm.wgsl) and in which
configuration (the rule's, or the tuner's winner), recorded by the kernel's module.

The top of gpustd/gemm/: plan (pure) <- portable, matrix_codegen (over matrix_tile,
matrix_loop) <- matrix_gemm_source <- matrix_units <- tuning, matrix_tuning <- dispatch.
Nothing below imports this module or the tuners.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Buffer, Device

from . import (
    cpu,
    int8_units,
    matrix_fused,
    matrix_geglu,
    matrix_tuning,
    matrix_units,
    portable,
    tuning,
)
from .matrix_codegen import MatrixTile
from .plan import BatchPlan, k_partition, plan_gemm

__all__ = ["fused_tile", "geglu_tile", "parts_fit", "record_gemm", "record_gemm_gated_add",
           "record_gemm_geglu", "record_gemm_gelu", "record_gemm_parts", "record_gemm_w8a8",
           "w8a8_on_matrix_units"]


def record_gemm(a: Buffer[Any], b: Buffer[Any], c: Buffer[Any], bias: Buffer[Any] | None, *,
                m: int, n: int, k: int, trans_a: bool, trans_b: bool, alpha: float, beta: float,
                plan: BatchPlan, bias_rows: bool = False, b_format: str = "") -> None:
    """Record C = alpha op(A) op(B) + beta C + bias for every batch entry of `plan` (no
    validation: the public wrappers have done it).

    A, B, C: row-major m x k (k x m with trans_a), k x n (n x k with trans_b), m x n per batch
    entry, one dtype (f32 or f16; f32 accumulation). bias: (n,) added to every row, or with
    `bias_rows` (m,), one value per row (a 1x1 conv's output channels); None for none.
    b_format: B is a weight (n x k, trans_b) of GGML blocks ("q8_0", "q4_k": a
    gpustd.quant.QuantizedTensor's u32 buffer) dequantized inside the portable kernel.
    numpy: ``alpha * op(a) @ op(b) + beta * c + bias``."""
    if m == 0 or n == 0 or plan.count == 0:
        return
    device = c.device
    # 1. f16 on the matrix units (Dawn), in the tuner's tile (the rule's until tuned)
    if (c.dtype == a.dtype == b.dtype == np.float16 and not b_format
            and matrix_units.available(device)):
        matrix_tile = matrix_tuning.gemm_tile(device, m, n, k, plan.count, trans_a, trans_b)
        matrix_units.record_gemm_matrix(
            a, b, c, bias if bias is not None else portable.no_bias(device, c.dtype),
            has_bias=bias is not None, m=m, n=n, k=k, trans_a=trans_a, trans_b=trans_b,
            alpha=alpha, beta=beta, plan=plan, tile=matrix_tile, bias_rows=bias_rows)
        return
    # 2. a CPU adapter's direct product
    if cpu.applies(c, k, b_format):
        cpu.record_gemm(a, b, c, bias if bias is not None else portable.no_bias(device, c.dtype),
                        has_bias=0 if bias is None else 2 if bias_rows else 1, m=m, n=n, k=k,
                        trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, plan=plan)
        return
    # 3. gemm.wgsl: the rule's K splits; its tile and main loop, or the tuner's for them
    chosen = plan_gemm(m, n, k, plan.count)
    tile, paired = chosen.tile, chosen.paired
    if c.dtype in tuning.DTYPES:
        splits, _ = k_partition(chosen.splits, k, plan.count * m * n, device)
        tile, paired = tuning.choose(device, c.dtype, m, n, k, plan.count, trans_a, trans_b,
                                     chosen, splits)
    portable.record_gemm(a, b, c, bias, m=m, n=n, k=k, trans_a=trans_a, trans_b=trans_b,
                         alpha=alpha, beta=beta, plan=plan, tile=tile, splits=chosen.splits,
                         paired=paired, bias_rows=bias_rows, b_format=b_format)


def parts_fit(device: Device, dtype: Any, parts: int) -> bool:
    """Whether record_gemm_parts can take `parts` products of one `dtype` input on `device`
    (f16 on the matrix units, its bindings within the device's limit)."""
    storage = 2 + 2 * parts  # a, the bias placeholder, every b and c
    return (dtype == np.float16 and parts > 1 and matrix_units.available(device)
            and storage <= device.limits["max-storage-buffers-per-shader-stage"])


def record_gemm_parts(a: Buffer[Any], bs: list[Buffer[Any]], cs: list[Buffer[Any]], *,
                      m: int, n: int, k: int, bias: Buffer[Any] | None = None) -> bool:
    """Record cs[i] = A (m x k) Bs[i]^T (n x k each, a weight as stored) + bias[i * n:(i + 1)
    * n] (the parts' biases joined, f16 [len(bs) * n]; None: none) for every i as one
    dispatch where the matrix units take it (f16), in the tile gemm_tile gives for a batch of
    len(bs), and say whether it did; False: nothing recorded, the caller records the products
    one by one. Products that split K alone (matrix_units.split_k) go unsplit here: SDXL's
    cross-attention keys and values of one context, 154 x 1280 x 2048 twice, ran 45.7 us as
    two parts against 69.6 split one by one (H100, Dawn; bench/NOTES.md, "q, k and v in one
    dispatch")."""
    device = a.device
    if not (parts_fit(device, a.dtype, len(bs)) and len(bs) == len(cs)
            and all(x.dtype == np.float16 for x in (*bs, *cs))
            and (bias is None or (bias.dtype == np.float16 and bias.length == len(bs) * n))):
        return False
    tile = matrix_tuning.gemm_tile(device, m, n, k, len(bs), False, True)
    matrix_units.record_gemm_parts(a, bs, cs, m=m, n=n, k=k, tile=tile, bias=bias)
    return True


def geglu_tile(device: Device, dtype: Any, m: int, d: int, k: int) -> MatrixTile | None:
    """The tile record_gemm_geglu runs GEGLU of [m, k] through a [2d, k] weight of `dtype` in
    on `device` (gemm_tile's for the [m, 2d] product), or None where it cannot: not f16 on
    the matrix units, or a tile that matrix_geglu.fits refuses."""
    if not (dtype == np.float16 and m > 0 and d > 0 and k > 0
            and matrix_units.available(device)):
        return None
    tile = matrix_tuning.gemm_tile(device, m, 2 * d, k, 1, False, True)
    return tile if matrix_geglu.fits(tile, m, d, k) else None


def record_gemm_geglu(x: Buffer[Any], w: Buffer[Any], bias: Buffer[Any] | None, out: Buffer[Any],
                      *, m: int, d: int, k: int, approximate: int, tile: MatrixTile) -> None:
    """Record out (m x d) = GEGLU of x (m x k) through the [2d, k] weight w (+ bias [2d]) as
    one GEMM on the matrix units (gemm.matrix_geglu) in the `tile` geglu_tile gave.
    approximate: 1 erf GELU, 2 tanh."""
    device = x.device
    matrix_geglu.record_gemm_geglu(
        x, w, bias if bias is not None else portable.no_bias(device, np.dtype(np.float16)), out,
        has_bias=bias is not None, m=m, d=d, k=k, tile=tile, approximate=approximate)


# The gated epilogue on f16-accumulating 256 x 256 tiles: slower than the plain GEMM and the
# gated add after it (FLUX's 4096 x 12288 x 3072 1.560 against 1.367 ms, 4096 x 3072 x 3072
# 0.453 against 0.430; on 256 x 128 tiles and with f32 accumulators it wins 4-10%; H200,
# Dawn, bench/NOTES.md, "Is the fused gated GEMM worth keeping"). False: fused there too.
GATED_ON_BIG_ACC16 = False


def fused_tile(device: Device, dtype: Any, m: int, n: int, k: int,
               epilogue: str = "gelu") -> MatrixTile | None:
    """The tile record_gemm_gelu ("gelu") and record_gemm_gated_add ("gated") run [m, k]
    through an [n, k] weight of `dtype` in on `device` (gemm_tile's for the product, the tile
    the plain GEMM takes), or None where they cannot or should not: not f16 on the matrix
    units, a shape matrix_fused.fits refuses, or the gated epilogue on an f16-accumulating
    256 x 256 tile (GATED_ON_BIG_ACC16)."""
    if not (dtype == np.float16 and m > 0 and n > 0 and k > 0
            and matrix_units.available(device)):
        return None
    tile = matrix_tuning.gemm_tile(device, m, n, k, 1, False, True)
    if (epilogue == "gated" and not GATED_ON_BIG_ACC16 and tile.acc == "f16"
            and tile.bm * tile.bn >= 256 * 256):
        return None
    return tile if matrix_fused.fits(tile, m, n, k) else None


def record_gemm_gelu(x: Buffer[Any], w: Buffer[Any], bias: Buffer[Any] | None, out: Buffer[Any],
                     *, m: int, n: int, k: int, approximate: int, tile: MatrixTile,
                     stride: int, column: int) -> None:
    """Record out[:, column:column + n] (rows of `stride`) = gelu(x (m x k) w^T + bias) for
    the [n, k] weight w as one GEMM on the matrix units (gemm.matrix_fused) in the `tile`
    fused_tile gave. approximate: 1 erf GELU, 2 tanh."""
    matrix_fused.record_gemm_gelu(
        x, w, _bias(x.device, bias), out, has_bias=bias is not None, m=m, n=n, k=k, tile=tile,
        approximate=approximate, stride=stride, column=column)


def record_gemm_gated_add(x: Buffer[Any], w: Buffer[Any], bias: Buffer[Any] | None,
                          out: Buffer[Any], residual: Buffer[Any], gate: Buffer[Any], *, m: int,
                          n: int, k: int, tile: MatrixTile, length: int, gate_width: int,
                          gate_at: int) -> None:
    """Record out (m x n) = clip(residual + gate[row // length, gate_at:gate_at + n] * (x
    (m x k) w^T + bias)) to +-65504 for the [n, k] weight w (gate rows of gate_width) as one
    GEMM on the matrix units (gemm.matrix_fused) in the `tile` fused_tile gave."""
    matrix_fused.record_gemm_gated_add(
        x, w, _bias(x.device, bias), out, residual, gate, has_bias=bias is not None, m=m, n=n,
        k=k, tile=tile, length=length, gate_width=gate_width, gate_at=gate_at)


def _bias(device: Device, bias: Buffer[Any] | None) -> Buffer[Any]:
    return bias if bias is not None else portable.no_bias(device, np.dtype(np.float16))


def w8a8_on_matrix_units(device: Device, dtype: Any) -> bool:
    """Whether record_gemm_w8a8 runs on the matrix units for a `dtype` result on `device`
    (f16 where the device multiplies i8 16x16x32 fragments), not the portable kernel."""
    return dtype == np.float16 and int8_units.available(device)


def record_gemm_w8a8(a: Buffer[Any], b: Buffer[Any], scale_a: Buffer[Any], scale_b: Buffer[Any],
                     bias: Buffer[Any] | None, c: Buffer[Any], *, m: int, n: int, kw: int,
                     beta: float = 0.0) -> None:
    """Record C (m x n, f16 or f32) = (A B^T) scale_a[row] scale_b[col] + beta C + bias, A
    (m x kw) and B (n x kw) int8 four to an i32 word, i32 sums (gpustd/gemm/int8_units.py): on
    the matrix units where w8a8_on_matrix_units, else the portable kernel. No validation
    (gpustd.nn.int8_linear has done it). numpy: ``(a8.astype(int32) @ b8.T.astype(int32)) *
    scale_a[:, None] * scale_b + beta * c + bias``."""
    if m == 0 or n == 0:
        return
    device = c.device
    placeholder = bias if bias is not None else portable.no_bias(device, c.dtype)
    if w8a8_on_matrix_units(device, c.dtype):
        tile = int8_units.choose_tile(
            m, n, 4 * kw, storage=device.limits["max-compute-workgroup-storage-size"],
            invocations=device.limits["max-compute-invocations-per-workgroup"])
        int8_units.record_w8a8_matrix(a, b, scale_a, scale_b, placeholder, c, m=m, n=n, kw=kw,
                                      has_bias=bias is not None, beta=beta, tile=tile)
        return
    int8_units.record_w8a8_portable(a, b, scale_a, scale_b, placeholder, c, m=m, n=n, kw=kw,
                                    has_bias=bias is not None, beta=beta)
