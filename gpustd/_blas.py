"""Level-1/2 BLAS dispatch (reductions, axpy, scal, gemv) for gpustd.linalg (no validation)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Buffer, Device, Kernel

__all__ = ["MODES", "record_axpy", "record_gemv", "record_reduce", "record_scal"]

MODES = {"dot": 0, "asum": 1, "nrm2": 2}
_WG = 256
_MAX_GROUPS = 1024  # partials per reduction: one workgroup finishes them in a few steps
_GEMV_COLS = 64

def _kernel(name: str, dtype: np.dtype, *, entry: str = "main", **constants: float) -> Kernel:
    return Kernel.cached(f"linalg/{name}", entry=entry, constants=constants,
                         types={"T": dtype})


def _partials_for(device: Device) -> Buffer[Any]:
    # One scratch buffer per device is enough: the queue runs in order, so the next
    # reduction's first pass cannot overwrite partials that an earlier finish still needs.
    return device.keep("reduction partials", lambda: Buffer(
        2 * _MAX_GROUPS, np.float32, device=device, label="reduction partials"))


def record_reduce(mode: str, x: Buffer[Any], y: Buffer[Any] | None, out: Buffer[Any]) -> None:
    """out[0] = dot(x, y) / asum(x) / nrm2(x) over all elements, in two passes."""
    n = x.length
    groups = max(1, min(_MAX_GROUPS, math.ceil(n / (_WG * 4))))
    partials = _partials_for(x.device)
    second = x if y is None else y
    code = MODES[mode]
    first = _kernel("reduce", x.dtype, entry="partial", WG=_WG, MODE=code)
    first.dispatch(groups, x, second, partials, out, n=n, groups=groups)
    last = _kernel("reduce", x.dtype, entry="finish", WG=_WG, MODE=code)
    last.dispatch(1, x, second, partials, out, n=n, groups=groups)


def record_axpy(alpha: float, x: Buffer[Any], y: Buffer[Any]) -> None:
    """y = alpha * x + y."""
    kernel = _kernel("axpy", x.dtype)
    kernel.dispatch(kernel.groups_for(x.length), x, y, n=x.length, alpha=alpha)


def record_scal(alpha: float, x: Buffer[Any]) -> None:
    """x = alpha * x."""
    kernel = _kernel("scal", x.dtype)
    kernel.dispatch(kernel.groups_for(x.length), x, n=x.length, alpha=alpha)


def record_gemv(alpha: float, a: Buffer[Any], rows: int, cols: int, x: Buffer[Any], beta: float,
                y: Buffer[Any], *, trans: bool) -> None:
    """y = alpha * op(A) x + beta * y for A stored row-major rows x cols."""
    kernel = _kernel("gemv", a.dtype, WG=_WG, COLS=_GEMV_COLS, TRANS=int(trans))
    groups = math.ceil(cols / _GEMV_COLS) if trans else rows
    if groups:
        kernel.dispatch(groups, a, x, y, rows=rows, cols=cols, alpha=alpha, beta=beta)
