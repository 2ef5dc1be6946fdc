"""Linear algebra (BLAS) on the GPU: dot, axpy, scal, norm, asum, gemv, gemm, matmul.

float32 everywhere; float16 storage where the device has shader-f16, always accumulating in
float32. Kernels: shaders/linalg/{reduce,axpy,scal,gemv,gemm}.wgsl.
Decompositions (float32, batched over leading axes, numpy's conventions): ``qr`` (blocked
Householder, shaders/linalg/qr_*.wgsl) and ``svd`` (one-sided Jacobi, jacobi.wgsl).

Size limit: each operand is bound whole, so any operand (or result) larger than the device's
``max-storage-buffer-binding-size`` is refused with ``gpucore.DeviceLimitError`` before any GPU
work; split such a problem (e.g. along the batch or the rows of ``a``) and call once per piece.
"""

from __future__ import annotations

from typing import Any

from . import _blas
from ._linalg_checks import check_size, distinct, tensors, writable
from ._matmul import gemm, matmul
from ._qr import QRResult, qr
from ._svd import SVDResult, svd
from ._tensor import Tensor

__all__ = ["QRResult", "SVDResult", "asum", "axpy", "dot", "gemm", "gemv", "matmul", "norm",
           "qr", "scal", "svd"]


# -- level 1 --------------------------------------------------------------------------
def _reduce(op: str, mode: str, x: Any, y: Any = None) -> Tensor:
    items = [("x", x)] + ([("y", y)] if y is not None else [])
    found = tensors(op, *items)
    if y is not None and found[0].shape != found[1].shape:
        raise ValueError(f"{op}: x {found[0].shape} and y {found[1].shape} must have the "
                         "same shape")
    check_size(op, *zip([n for n, _ in items], found))
    out = Tensor.empty((), found[0].dtype, device=found[0].device)
    _blas.record_reduce(mode, found[0].buffer, found[1].buffer if y is not None else None,
                        out.buffer)
    return out


def dot(x: Any, y: Any) -> Tensor:
    """Inner product sum(x * y) of two same-shape tensors (all elements), as a 0-d Tensor.

    float32 or float16 (accumulated in float32). numpy: ``np.vdot(x, y)``; BLAS ``sdot``.
    """
    return _reduce("dot", "dot", x, y)


def asum(x: Any) -> Tensor:
    """sum(|x|) over all elements, as a 0-d Tensor. numpy: ``np.abs(x).sum()``; BLAS ``sasum``."""
    return _reduce("asum", "asum", x)


def norm(x: Any) -> Tensor:
    """Euclidean (L2) norm of all elements, as a 0-d Tensor; scaled so squares cannot overflow.

    numpy: ``np.linalg.norm(x.ravel())``; BLAS ``snrm2``.
    """
    return _reduce("norm", "nrm2", x)


def axpy(alpha: float, x: Any, y: Tensor) -> Tensor:
    """y = alpha * x + y, in place; returns y. Same shapes. BLAS ``saxpy``; numpy ``y += a * x``."""
    y = writable("axpy", "y", y)
    xt, yt = tensors("axpy", ("x", x), ("y", y))
    if xt.shape != yt.shape:
        raise ValueError(f"axpy: x {xt.shape} and y {yt.shape} must have the same shape")
    distinct("axpy", ("y", yt), ("x", xt))
    check_size("axpy", ("x", xt), ("y", yt))
    _blas.record_axpy(float(alpha), xt.buffer, yt.buffer)
    return yt


def scal(alpha: float, x: Tensor) -> Tensor:
    """x = alpha * x, in place; returns x. BLAS ``sscal``; numpy ``x *= alpha``."""
    (xt,) = tensors("scal", ("x", writable("scal", "x", x)))
    check_size("scal", ("x", xt))
    _blas.record_scal(float(alpha), xt.buffer)
    return xt


# -- level 2 --------------------------------------------------------------------------
def gemv(alpha: float, a: Any, x: Any, beta: float = 0.0, y: Tensor | None = None, *,
         trans: bool = False) -> Tensor:
    """y = alpha * op(a) @ x + beta * y with op(a) = a.T if `trans`; y updated and returned.

    a: (m, n); x: (n,) or (m,) when transposed; y: (m,) or (n,), allocated when None (then
    beta must be 0). beta = 0 never reads y. BLAS ``sgemv``; numpy ``alpha * a @ x + beta * y``.
    """
    items: list[tuple[str, Any]] = [("a", a), ("x", x)]
    if y is not None:
        items.append(("y", writable("gemv", "y", y)))
    found = tensors("gemv", *items)
    at, xt = found[0], found[1]
    if at.ndim != 2 or xt.ndim != 1:
        raise ValueError(f"gemv: a must be 2-D and x 1-D, got a {at.shape} and x {xt.shape}")
    rows, cols = at.shape
    length_in, length_out = (rows, cols) if trans else (cols, rows)
    if xt.shape[0] != length_in:
        raise ValueError(f"gemv: a {at.shape}{'.T' if trans else ''} needs x of length "
                         f"{length_in}, got x {xt.shape}")
    if y is None:
        if beta != 0:
            raise ValueError("gemv: beta != 0 needs a y to scale; pass y")
        yt = Tensor.empty((length_out,), at.dtype, device=at.device)
    else:
        yt = found[2]
        if yt.shape != (length_out,):
            raise ValueError(f"gemv: y must have shape ({length_out},) for a {at.shape}"
                             f"{'.T' if trans else ''}, got {yt.shape}")
        distinct("gemv", ("y", yt), ("a", at), ("x", xt))
    check_size("gemv", ("a", at), ("x", xt), ("y", yt))
    _blas.record_gemv(float(alpha), at.buffer, rows, cols, xt.buffer, float(beta), yt.buffer,
                      trans=trans)
    return yt

