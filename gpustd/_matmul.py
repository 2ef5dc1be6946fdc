"""Level-3 BLAS: gemm and numpy-style batched matmul (with a fused bias), exported by linalg."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._linalg_checks import check_size, distinct, tensors, writable
from ._tensor import Tensor
from .gemm.dispatch import record_gemm
from .gemm.plan import batch_plan

__all__ = ["gemm", "matmul"]


def _matrix_dims(name: str, shape: tuple[int, ...], trans: bool) -> tuple[int, int]:
    """(rows, cols) of op(X) for the last two dims of `shape`."""
    rows, cols = shape[-2:]
    return (cols, rows) if trans else (rows, cols)


def _describe(name: str, shape: tuple[int, ...], trans: bool) -> str:
    return f"{name} {shape}{' transposed' if trans else ''}"


def gemm(alpha: float, a: Any, b: Any, beta: float = 0.0, c: Tensor | None = None, *,
         trans_a: bool = False, trans_b: bool = False) -> Tensor:
    """C = alpha * op(a) @ op(b) + beta * C; C is updated in place and returned.

    a: (m, k), or (k, m) with `trans_a`; b: (k, n), or (n, k) with `trans_b`; c: (m, n),
    allocated when None (then beta must be 0). beta = 0 never reads C (BLAS semantics: C may
    hold NaN). float32 or float16 (float32 accumulation). Transposes cost nothing: they are
    handled while loading tiles. Operands above the device's storage binding size raise
    DeviceLimitError (see gpustd.linalg). BLAS ``sgemm``; numpy
    ``alpha * op(a) @ op(b) + beta * c``.
    """
    items: list[tuple[str, Any]] = [("a", a), ("b", b)]
    if c is not None:
        items.append(("c", writable("gemm", "c", c)))
    found = tensors("gemm", *items)
    at, bt = found[0], found[1]
    if at.ndim != 2 or bt.ndim != 2:
        raise ValueError(f"gemm: a and b must be 2-D, got a {at.shape} and b {bt.shape}; "
                         "use matmul for batches")
    m, k = _matrix_dims("a", at.shape, trans_a)
    k_b, n = _matrix_dims("b", bt.shape, trans_b)
    if k != k_b:
        raise ValueError(f"gemm: inner dimensions differ: {_describe('a', at.shape, trans_a)} "
                         f"has k={k}, {_describe('b', bt.shape, trans_b)} has k={k_b}")
    if c is None:
        if beta != 0:
            raise ValueError("gemm: beta != 0 needs a c to scale; pass c")
        check_size("gemm", ("a", at), ("b", bt), ("c", ((m, n), at.dtype)))
        ct = Tensor.empty((m, n), at.dtype, device=at.device)
    else:
        ct = found[2]
        if ct.shape != (m, n):
            raise ValueError(f"gemm: c must have shape {(m, n)} for "
                             f"{_describe('a', at.shape, trans_a)} @ "
                             f"{_describe('b', bt.shape, trans_b)}, got c {ct.shape}")
        distinct("gemm", ("c", ct), ("a", at), ("b", bt))
        check_size("gemm", ("a", at), ("b", bt), ("c", ct))
    plan = batch_plan((), (), (), m * k, k * n)
    record_gemm(at.buffer, bt.buffer, ct.buffer, None, m=m, n=n, k=k, trans_a=trans_a,
                trans_b=trans_b, alpha=float(alpha), beta=float(beta), plan=plan)
    return ct


def matmul(a: Any, b: Any, *, trans_a: bool = False, trans_b: bool = False,
           bias: Any = None, out: Tensor | None = None) -> Tensor:
    """Matrix product with numpy's batching rules, optional transposes and a fused bias.

    a: (..., m, k) (or (..., k, m) with `trans_a`), b: (..., k, n) (or (..., n, k) with
    `trans_b`); the batch dims broadcast, so (B, m, k) @ (k, n) reuses one b for every batch
    entry without copying. A 1-D a is a row vector and a 1-D b a column vector whose dimension
    is dropped from the result, as in np.matmul (transposes do not apply to them). bias: (n,),
    added to every row in the GEMM epilogue, so ``matmul(x, w, trans_b=True, bias=b)`` is a
    linear layer (torch ``F.linear(x, w, b)``). out: a Tensor of the result shape to write
    into. float32 or float16 (float32 accumulation). Operands above the device's storage
    binding size raise DeviceLimitError (see gpustd.linalg).
    numpy: ``np.matmul(op(a), op(b)) + bias``.
    """
    items: list[tuple[str, Any]] = [("a", a), ("b", b)]
    if bias is not None:
        items.append(("bias", bias))
    if out is not None:
        items.append(("out", writable("matmul", "out", out)))
    found = dict(zip([name for name, _ in items], tensors("matmul", *items)))
    at, bt = found["a"], found["b"]
    if at.ndim == 0 or bt.ndim == 0:
        raise ValueError(f"matmul: operands must be at least 1-D, got a {at.shape} and b "
                         f"{bt.shape}; use multiplication for scalars")
    a_shape = (1, *at.shape) if at.ndim == 1 else at.shape
    b_shape = (*bt.shape, 1) if bt.ndim == 1 else bt.shape
    trans_a, trans_b = trans_a and at.ndim > 1, trans_b and bt.ndim > 1
    m, k = _matrix_dims("a", a_shape, trans_a)
    k_b, n = _matrix_dims("b", b_shape, trans_b)
    if k != k_b:
        raise ValueError(f"matmul: inner dimensions differ: {_describe('a', at.shape, trans_a)} "
                         f"has k={k}, {_describe('b', bt.shape, trans_b)} has k={k_b}")
    try:
        batch = tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    except ValueError:
        raise ValueError(f"matmul: batch dims of a {at.shape} and b {bt.shape} do not "
                         "broadcast (numpy rules: equal, or 1)") from None
    shape = batch + ((m,) if at.ndim > 1 else ()) + ((n,) if bt.ndim > 1 else ())
    if "bias" in found and found["bias"].shape != (n,):
        raise ValueError(f"matmul: bias must have shape ({n},) (one value per output column), "
                         f"got {found['bias'].shape}")
    if out is None:
        check_size("matmul", *[(name, t) for name, t in found.items()],
                   ("out", (shape, at.dtype)))
        result = Tensor.empty(shape, at.dtype, device=at.device)
    else:
        result = found["out"]
        if result.shape != shape:
            raise ValueError(f"matmul: out must have shape {shape}, got {result.shape}")
        distinct("matmul", ("out", result), *[(nm, t) for nm, t in found.items() if nm != "out"])
        check_size("matmul", *found.items())
    plan = batch_plan(batch, a_shape[:-2], b_shape[:-2], m * k, k * n)
    bias_buffer = found["bias"].buffer if "bias" in found else None
    record_gemm(at.buffer, bt.buffer, result.buffer, bias_buffer, m=m, n=n, k=k,
                trans_a=trans_a, trans_b=trans_b, alpha=1.0, beta=0.0, plan=plan)
    return result
