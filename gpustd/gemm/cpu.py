"""The GEMM on CPU adapters: shaders/linalg/gemm_cpu.wgsl, a direct product shaped for
llvmpipe (eight invocations a vector, every load a gather), in place of gemm.wgsl's
workgroup tiles and split-K finishing pass (bench/NOTES.md, "A direct GEMM and conv for CPU
adapters")."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Buffer, Kernel

from .plan import BatchPlan

__all__ = ["DIRECT", "applies", "record_gemm"]

# False: CPU adapters take gemm.wgsl as GPUs do (its tiles, splits and autotuner; the tuner's
# tests run on lavapipe, and bench/ compares the two).
DIRECT = True

_LANES = 8  # invocations a workgroup: one vector of llvmpipe's (256-bit, f32)
_BLOCK = 8  # rows and columns of C an invocation


def record_gemm(a: Buffer[Any], b: Buffer[Any], c: Buffer[Any], bias: Buffer[Any], *,
                has_bias: int, m: int, n: int, k: int, trans_a: bool, trans_b: bool,
                alpha: float, beta: float, plan: BatchPlan) -> None:
    """Record C = alpha op(A) op(B) + beta C + bias for every batch entry of `plan` (as
    gpustd.gemm.dispatch.record_gemm; has_bias 0 none, 1 one per column, 2 one per row)."""
    # vec4 reads need the contiguous dimension (and so every row start) 16-byte aligned.
    vec_a = (m if trans_a else k) % 4 == 0
    vec_b = (k if trans_b else n) % 4 == 0
    types: dict[str, Any] = {"T": c.dtype}
    if not vec_a:
        types["AV"] = "T"
    if not vec_b:
        types["BV"] = "T"
    kernel = Kernel.cached("linalg/gemm_cpu", types=types, constants={
        "TRANS_A": int(trans_a), "TRANS_B": int(trans_b), "VEC_A": int(vec_a),
        "VEC_B": int(vec_b)})  # beta from the params: one kernel less to compile
    device = c.device
    max_z = device.limits["max-compute-workgroups-per-dimension"]
    per_group = plan.outer * plan.inner
    grid_xy = (math.ceil(m / (_LANES * _BLOCK)), math.ceil(n / _BLOCK))
    for g, (a_base, b_base) in enumerate(plan.groups):
        for z_base in range(0, per_group, max_z):
            kernel.dispatch(
                (*grid_xy, min(max_z, per_group - z_base)), a, b, bias, c, m=m, n=n, k=k,
                a_base=a_base, a_outer=plan.outer_strides[0], a_inner=plan.inner_strides[0],
                b_base=b_base, b_outer=plan.outer_strides[1], b_inner=plan.inner_strides[1],
                c_base=g * per_group * m * n, inner=plan.inner, z_base=z_base, alpha=alpha,
                beta=beta, has_bias=has_bias)


def applies(c: Buffer[Any], k: int, b_format: str) -> bool:
    """Whether a product takes this kernel: float operands on a CPU adapter, K not empty."""
    return (DIRECT and c.device.info.type == "cpu" and not b_format and k > 0
            and c.dtype in (np.dtype(np.float32), np.dtype(np.float16)))
