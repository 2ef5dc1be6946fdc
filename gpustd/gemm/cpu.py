"""The GEMM on CPU adapters: shaders/linalg/gemm_cpu.wgsl, a direct product shaped for
llvmpipe (eight invocations a vector, every load a gather), in place of gemm.wgsl's
workgroup tiles and split-K finishing pass (bench/NOTES.md, "A direct GEMM and conv for CPU
adapters"); and what the direct kernels of gpustd/nn (attention, conv2d) share with it: LANES
and direct_kernel, the choice between vec4 and scalar reads."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Buffer, Kernel

from .plan import BatchPlan

__all__ = ["DIRECT", "LANES", "applies", "direct_kernel", "record_gemm"]

# False: CPU adapters take gemm.wgsl as GPUs do (its tiles, splits and autotuner; the tuner's
# tests run on lavapipe, and bench/ compares the two).
DIRECT = True

LANES = 8  # invocations a workgroup: one vector of llvmpipe's (256-bit, f32)
_BLOCK = 8  # rows and columns of C an invocation


def direct_kernel(name: str, types: dict[str, Any],
                  vectors: dict[str, tuple[str, tuple[int, ...]]], **constants: float) -> Kernel:
    """The Kernel of shaders/<name>.wgsl (Kernel.cached), a direct kernel of CPU adapters whose
    bindings read vec4s where they can: `vectors` maps each such binding's element alias
    (vec4<T> in the WGSL) to its bool override and the element counts its rows start at and
    run by; where one is not a multiple of 4 the binding reads T (alias T, override false)."""
    types = dict(types)
    for alias, (flag, counts) in vectors.items():
        # a vec4 read needs its row's start, and so every row's length, a multiple of 4
        vec = all(count % 4 == 0 for count in counts)
        if not vec:
            types[alias] = "T"
        constants[flag] = int(vec)
    return Kernel.cached(name, types=types, constants=constants)


def record_gemm(a: Buffer[Any], b: Buffer[Any], c: Buffer[Any], bias: Buffer[Any], *,
                has_bias: int, m: int, n: int, k: int, trans_a: bool, trans_b: bool,
                alpha: float, beta: float, plan: BatchPlan) -> None:
    """Record C = alpha op(A) op(B) + beta C + bias for every batch entry of `plan` (as
    gpustd.gemm.dispatch.record_gemm; has_bias 0 none, 1 one per column, 2 one per row)."""
    # each operand's rows run along its contiguous dimension; beta comes from the params, not
    # an override: one kernel less to compile
    kernel = direct_kernel("linalg/gemm_cpu", {"T": c.dtype}, {
        "AV": ("VEC_A", (m if trans_a else k,)), "BV": ("VEC_B", (k if trans_b else n,))},
        TRANS_A=int(trans_a), TRANS_B=int(trans_b))
    device = c.device
    max_z = device.limits["max-compute-workgroups-per-dimension"]
    per_group = plan.outer * plan.inner
    grid_xy = (math.ceil(m / (LANES * _BLOCK)), math.ceil(n / _BLOCK))
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
