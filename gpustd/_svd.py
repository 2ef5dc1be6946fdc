"""SVD by one-sided (Hestenes) Jacobi on the GPU (shaders/linalg/jacobi.wgsl, svd_finish.wgsl).

The columns of A (rows of the stored transpose; for a wide A its rows, i.e. the columns of
A^T) are rotated pairwise until every pair is orthogonal to a relative tolerance; their norms
are then the singular values, the normalized columns the left singular vectors, and the
accumulated rotations the right ones. One sweep is npad-1 dispatches of disjoint pairs
(round-robin ordering), each workgroup rotating one pair of one batch entry; up to 64 columns
one dispatch runs the whole sweep, a workgroup per batch entry. Jacobi is slower
than bidiagonalization for large n but computes small singular values to high relative
accuracy and batches naturally.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from gpucore import Buffer, Kernel

from ._qr import eye_into, householder, prepare, transpose_into
from ._tensor import Tensor

__all__ = ["MAX_SWEEPS", "SVDResult", "svd", "tolerance"]

MAX_SWEEPS = 60  # float32 needs ~12 sweeps at n = 256 (gaussian), ~25 with cond 1e6
_TINY = 1e-18   # singular values below this (A scaled to max |a| ~ 1) count as zero:
                # their squares underflow, so their columns cannot be normalized reliably
_MAX_Y = 65535
_FUSED_PAIRS = 32  # up to 64 rows, jacobi.wgsl's `sweep` runs a whole sweep per dispatch


class SVDResult(NamedTuple):
    """numpy's ``SVDResult``: ``U`` (..., m, m|K), ``S`` (..., K), ``Vh`` (..., n|K, n)."""

    U: Tensor
    S: Tensor
    Vh: Tensor


def tolerance(length: int) -> float:
    """Pairs count as orthogonal when |w_p . w_q| <= tolerance ||w_p|| ||w_q||: float32's
    epsilon times sqrt(length) (LAPACK sgesvj's choice), times 2 so that the rounding noise of
    the dot products themselves cannot keep a pair rotating forever. U is orthogonal to about
    this tolerance."""
    return 2.0 * float(np.finfo(np.float32).eps) * math.sqrt(max(length, 1))


def _chunks(batch: int) -> list[tuple[int, int]]:
    return [(b0, min(_MAX_Y, batch - b0)) for b0 in range(0, batch, _MAX_Y)]


def _jacobi(w: Buffer[Any], v: Buffer[Any] | None, batch: int, rows: int, length: int) -> int:
    """Rotate until converged; returns the number of sweeps. Raises LinAlgError after
    MAX_SWEEPS sweeps that still rotated."""
    device = w.device
    npad = rows + rows % 2
    count = Buffer.zeros(MAX_SWEEPS, np.uint32, device=device)
    fused = npad <= 2 * _FUSED_PAIRS
    kernel = Kernel.cached("linalg/jacobi", entry="sweep" if fused else "main",
                           constants={"WITH_V": int(v is not None)})
    v_buffer = v if v is not None else Buffer.empty(1, np.float32, device=device)
    tol = tolerance(length)
    for sweep in range(MAX_SWEEPS):
        for r in range(1 if fused else npad - 1):
            for b0, chunk in _chunks(batch):
                grid = chunk if fused else (npad // 2, chunk)
                kernel.dispatch(grid, w, v_buffer, count, rows=rows, len=length, npad=npad,
                                round=r, tol=tol, sweep=sweep, w_stride=rows * length,
                                v_stride=rows * rows, b0=b0)
        if count.read()[sweep] == 0:
            return sweep + 1
    raise np.linalg.LinAlgError(
        f"svd did not converge: pairs still rotated after {MAX_SWEEPS} Jacobi sweeps "
        f"(tolerance {tol:.2g}); the input may be badly scaled or not what was meant")


def _finish(entry: str, grid: Any, src: Buffer[Any], sv: Buffer[Any], perm: Buffer[Any],
            out: Buffer[Any], batch: int, *, rows: int, length: int, scale: float = 1.0,
            tiny: float = 0.0, out_rows: int = 0, **constants: float) -> None:
    kernel = Kernel.cached("linalg/svd_finish", entry=entry, constants=constants)
    for b0, chunk in _chunks(batch):
        kernel.dispatch(grid(chunk), src, sv, perm, out, rows=rows, len=length, scale=scale,
                        tiny=tiny, b0=b0, out_rows=out_rows)


def svd(a: Any, full_matrices: bool = True,
        compute_uv: bool = True) -> SVDResult | Tensor:
    """Singular value decomposition A = U diag(S) Vh, batched over leading axes.

    a: (..., m, n) float32 (a Tensor, or array data uploaded first). As numpy: S (..., K)
    descending with K = min(m, n); U (..., m, m) and Vh (..., n, n) when `full_matrices`,
    else U (..., m, K) and Vh (..., K, n); `compute_uv=False` returns S alone. Returns gpustd
    Tensors (an SVDResult named tuple, like numpy's). Singular vectors of repeated or zero
    singular values are any orthonormal basis of their space (as in LAPACK). One-sided Jacobi,
    converged to ``tolerance(max(m, n))`` relative orthogonality; raises
    np.linalg.LinAlgError if MAX_SWEEPS sweeps do not converge, TypeError for non-float32
    input, ValueError for ndim < 2, empty matrices or NaN / inf.
    numpy: ``np.linalg.svd``; torch: ``torch.linalg.svd``.
    """
    t, batch_shape, m, n, scale = prepare("svd", a)
    batch = math.prod(batch_shape)
    device = t.device
    tall = m >= n
    rows, length = (n, m) if tall else (m, n)  # Jacobi orthogonalizes `rows` vectors
    if tall:
        w = Buffer.empty(batch * rows * length, np.float32, device=device)
        transpose_into(t.buffer, w, batch, n, m, n, scale=scale)
    else:
        w = (t * scale).buffer
    v = None
    if compute_uv:
        v = Buffer.empty(batch * rows * rows, np.float32, device=device)
        eye_into(v, batch, rows, rows)
    _jacobi(w, v, batch, rows, length)
    sv = Buffer.empty(batch * rows, np.float32, device=device)
    perm = Buffer.empty(batch * rows, np.uint32, device=device)
    s = Tensor.empty((*batch_shape, rows), np.float32, device=device)
    _finish("norms", lambda c: (rows, c), w, sv, perm, s.buffer, batch, rows=rows,
            length=length)
    _finish("order", lambda c: (math.ceil(rows / 64), c), w, sv, perm, s.buffer, batch,
            rows=rows, length=length, scale=1.0 / scale)
    if v is None:
        return s
    # x: the normalized columns in descending order (zero rows where S ~ 0); y: V's columns.
    x = Buffer.empty(batch * rows * length, np.float32, device=device)
    _finish("gather", lambda c: (math.ceil(length / 16), math.ceil(rows / 16), c), w, sv, perm,
            x, batch, rows=rows, length=length, tiny=_TINY, NORMALIZE=1)
    y = Buffer.empty(batch * rows * rows, np.float32, device=device)
    _finish("gather", lambda c: (math.ceil(rows / 16), math.ceil(rows / 16), c), v, sv, perm,
            y, batch, rows=rows, length=rows, TRANSPOSE=int(not tall))
    x_rows = length if full_matrices else rows
    if x_rows > rows or np.any(s.numpy() <= _TINY / scale):
        x = _complete(x, s.buffer, batch, rows, length, x_rows, tiny=_TINY / scale)
    # Tall: U = x^T, Vh = y. Wide: Vh = x, U = y^T (transposed by the gather above).
    if tall:
        u = Tensor.empty((*batch_shape, m, x_rows), np.float32, device=device)
        transpose_into(x, u.buffer, batch, m, x_rows, m)
        return SVDResult(u, s, Tensor(y, (*batch_shape, n, n)))
    return SVDResult(Tensor(y, (*batch_shape, m, m)), s, Tensor(x, (*batch_shape, x_rows, n)))


def _complete(x: Buffer[Any], s: Buffer[Any], batch: int, rows: int, length: int,
              x_rows: int, *, tiny: float) -> Buffer[Any]:
    """x_rows orthonormal rows of `length` whose first ones are x's nonzero rows: Q^T of a
    complete Householder QR of x^T, with x's rows copied back where S > tiny (the reflectors
    reproduce them only up to sign)."""
    work = Buffer.empty(batch * rows * length, np.float32, device=x.device)
    work.copy_from(x)
    full = householder(work, batch, length, rows, x_rows)
    assert full is not None
    unused = Buffer.empty(1, np.uint32, device=x.device)
    _finish("merge", lambda c: (math.ceil(length / 16), math.ceil(rows / 16), c), x, s, unused,
            full, batch, rows=rows, length=length, tiny=tiny, out_rows=x_rows)
    return full
