"""Blocked Householder QR on the GPU (shaders/linalg/qr_*.wgsl), batched over leading axes.

Storage: each matrix is factored transposed (row c of `at` is column c of A), so a column's
elements are contiguous for the panel kernel and the trailing matrix is a contiguous block of
rows for the GEMMs. Per panel of NB columns: qr_panel factors it in one workgroup per batch
entry (reflectors + compact-WY T), then the trailing columns get C -= V T^T V^T C as two
gpustd GEMMs (W = C V, Y = W T) and qr_update's rank-NB update. Q is accumulated backwards
from the identity with the same three steps.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from gpucore import Buffer, Kernel

from ._linalg_checks import check_size
from ._tensor import Tensor
from .gemm.dispatch import record_gemm
from .gemm.plan import BatchPlan

__all__ = ["QRResult", "householder", "prepare", "qr",
           "transpose_into"]

NB = 32  # panel width: qr_panel's workgroup gives each later panel column 8 invocations
_MAX_Z = 65535  # workgroups along z (and y): WebGPU's guaranteed minimum


class QRResult(NamedTuple):
    """numpy's ``QRResult``: ``Q`` (..., m, K) and ``R`` (..., K, n)."""

    Q: Tensor
    R: Tensor


def prepare(op: str, a: Any) -> tuple[Tensor, tuple[int, ...], int, int, float]:
    """Validate `a` for a decomposition: (tensor, batch shape, m, n, scale).

    `scale` is the power of two that brings max |a| into [0.5, 1), found on the GPU in the
    same pass that detects NaN / inf (refused: LAPACK would return garbage or loop)."""
    if isinstance(a, Tensor):
        t = a
    else:
        host = np.asarray(a)
        if host.dtype == np.float64:
            host = host.astype(np.float32)
        if host.dtype != np.float32:
            raise TypeError(f"{op}: a has dtype {host.dtype}; {op} takes float32 (convert "
                            "with .astype(np.float32))")
        t = Tensor.from_numpy(host)
    if t.dtype != np.float32:
        raise TypeError(f"{op}: a has dtype {t.dtype}; {op} takes float32 (convert with "
                        ".astype(np.float32))")
    if t.ndim < 2:
        raise ValueError(f"{op}: a must have at least 2 dimensions (..., m, n), got shape "
                         f"{t.shape}")
    *batch, m, n = t.shape
    if m == 0 or n == 0 or math.prod(batch) == 0:
        raise ValueError(f"{op}: a has an empty dimension (shape {t.shape}); nothing to "
                         "decompose")
    check_size(op, ("a", t), ("a square", ((*batch, max(m, n), max(m, n)), t.dtype)))
    found = Buffer.zeros(1, np.uint32, device=t.device)
    kernel = Kernel.cached("linalg/qr_check")
    kernel.dispatch(min(1024, kernel.groups_for(t.size)), t.buffer, found, n=t.size)
    largest = float(found.read().view(np.float32)[0])
    if not math.isfinite(largest):
        raise ValueError(f"{op}: a contains NaN or inf; {op} needs finite values (check the "
                         "input, e.g. with np.isfinite)")
    scale = 1.0 if largest == 0 else math.ldexp(1.0, -math.frexp(largest)[1])
    return t, tuple(batch), m, n, scale


def _z_chunks(batch: int) -> list[tuple[int, int]]:
    return [(b0, min(_MAX_Z, batch - b0)) for b0 in range(0, batch, _MAX_Z)]


def transpose_into(src: Buffer[Any], dst: Buffer[Any], batch: int, rows: int, cols: int,
                   src_cols: int, *, scale: float = 1.0, upper: bool = False) -> None:
    """dst[b, i, c] = scale * src[b, c, i] (dst rows x cols, src cols x src_cols); with
    `upper` only i <= c is kept (zeros below the diagonal)."""
    kernel = Kernel.cached("linalg/qr_copy", entry="transpose", constants={"UPPER": int(upper)})
    for b0, count in _z_chunks(batch):
        kernel.dispatch((math.ceil(cols / 16), math.ceil(rows / 16), count), src, dst,
                        rows=rows, cols=cols, src_cols=src_cols, scale=scale, b0=b0)


def eye_into(dst: Buffer[Any], batch: int, rows: int, cols: int) -> None:
    kernel = Kernel.cached("linalg/qr_copy", entry="eye")
    unread = Buffer.empty(1, np.float32, device=dst.device)  # eye reads no source
    for b0, count in _z_chunks(batch):
        kernel.dispatch((math.ceil(cols / 16), math.ceil(rows / 16), count), unread, dst,
                        rows=rows, cols=cols, src_cols=cols, scale=1.0, b0=b0)


class _Panels:
    """The reflectors (vt: batch x panels x nb x m) and T factors of one factorization."""

    def __init__(self, device: Any, batch: int, m: int, k: int) -> None:
        self.batch, self.m = batch, m
        self.nb = min(NB, k)
        self.count = math.ceil(k / self.nb)
        self.vt = Buffer.empty(batch * self.count * self.nb * m, np.float32, device=device)
        self.tm = Buffer.empty(batch * self.count * self.nb ** 2, np.float32, device=device)

    def apply(self, c: Buffer[Any], c_rows: int, r0: int, rows: int, p: int, *,
              transpose_t: bool, scratch: tuple[Buffer[Any], Buffer[Any]]) -> None:
        """Rows r0 .. r0+rows-1 of c (batch x c_rows x m) -= (C V) op(T) Vt for panel p."""
        nb, m, batch = self.nb, self.m, self.batch
        w, y = scratch
        stride_v = self.count * nb * m
        plan = BatchPlan(batch, 1, batch, (0, 0), (c_rows * m, stride_v),
                         ((r0 * m, p * nb * m),))
        record_gemm(c, self.vt, w, None, m=rows, n=nb, k=m, trans_a=False,
                    trans_b=True, alpha=1.0, beta=0.0, plan=plan)
        plan = BatchPlan(batch, 1, batch, (0, 0), (rows * nb, self.count * nb * nb),
                         ((0, p * nb * nb),))
        record_gemm(w, self.tm, y, None, m=rows, n=nb, k=nb, trans_a=False,
                    trans_b=transpose_t, alpha=1.0, beta=0.0, plan=plan)
        c0 = p * nb  # the reflectors are zero in earlier columns
        kernel = Kernel.cached("linalg/qr_update", constants={"NB": nb})
        for b0, count in _z_chunks(batch):
            kernel.dispatch((math.ceil((m - c0) / 64), math.ceil(rows / 64), count), c, y,
                            self.vt, m=m, rows=rows, r0=r0, c0=c0, c_stride=c_rows * m,
                            vt_base=p * nb * m, vt_stride=stride_v, b0=b0)


def householder(at: Buffer[Any], batch: int, m: int, n: int,
                q_rows: int | None) -> Buffer[Any] | None:
    """Factor each A (stored transposed in `at`: batch x n x m) in place: R on and above the
    diagonal (of A), reflectors below. Returns Q^T (batch x q_rows x m) when q_rows is given
    (m for complete Q, min(m, n) for the reduced one)."""
    k = min(m, n)
    device = at.device
    panels = _Panels(device, batch, m, k)
    nb = panels.nb
    most = max(n, q_rows or 0)
    scratch = (Buffer.empty(batch * most * nb, np.float32, device=device),
               Buffer.empty(batch * most * nb, np.float32, device=device))
    kernel = Kernel.cached("linalg/qr_panel", constants={"NB": nb})
    for p in range(panels.count):
        j0 = p * nb
        width = min(nb, k - j0)
        kernel.dispatch(batch, at, panels.vt, panels.tm, m=m, j0=j0, width=width,
                        at_stride=n * m, vt_base=p * nb * m, vt_stride=panels.count * nb * m,
                        t_base=p * nb * nb, t_stride=panels.count * nb * nb, batch=batch)
        if j0 + width < n:
            panels.apply(at, n, j0 + width, n - j0 - width, p, transpose_t=False,
                         scratch=scratch)
    if q_rows is None:
        return None
    qt = Buffer.empty(batch * q_rows * m, np.float32, device=device)
    eye_into(qt, batch, q_rows, m)
    for p in reversed(range(panels.count)):
        # Q^T's rows before the panel are still identity rows, which its reflectors keep.
        j0 = p * nb
        if j0 < q_rows:
            panels.apply(qt, q_rows, j0, q_rows - j0, p, transpose_t=True, scratch=scratch)
    return qt


def qr(a: Any, mode: str = "reduced") -> QRResult | Tensor:
    """QR decomposition by blocked Householder reflections, batched over leading axes.

    a: (..., m, n) float32 (a Tensor, or array data uploaded first). mode as numpy:
    "reduced" -> (Q (..., m, K), R (..., K, n)) with K = min(m, n); "complete" -> (Q (..., m,
    m), R (..., m, n)); "r" -> R (..., K, n) alone. Returns gpustd Tensors (a QRResult named
    tuple, like numpy's). R's diagonal may be negative (LAPACK's sign convention, as numpy).
    Raises TypeError for non-float32 input and ValueError for ndim < 2, empty matrices or
    NaN / inf. numpy: ``np.linalg.qr``; torch: ``torch.linalg.qr``.
    """
    if mode not in ("reduced", "complete", "r"):
        raise ValueError(f"qr: mode must be 'reduced', 'complete' or 'r', got {mode!r} "
                         "(numpy's 'raw' and 'economic' are not offered)")
    t, batch_shape, m, n, scale = prepare("qr", a)
    batch = math.prod(batch_shape)
    k = min(m, n)
    device = t.device
    at = Buffer.empty(batch * n * m, np.float32, device=device)
    transpose_into(t.buffer, at, batch, n, m, n, scale=scale)
    q_rows = None if mode == "r" else (m if mode == "complete" else k)
    qt = householder(at, batch, m, n, q_rows)
    r_rows = m if mode == "complete" else k
    r = Tensor.empty((*batch_shape, r_rows, n), np.float32, device=device)
    transpose_into(at, r.buffer, batch, r_rows, n, m, scale=1.0 / scale, upper=True)
    if qt is None:
        return r
    assert q_rows is not None
    q = Tensor.empty((*batch_shape, m, q_rows), np.float32, device=device)
    transpose_into(qt, q.buffer, batch, m, q_rows, m)
    return QRResult(q, r)
