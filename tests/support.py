"""Shared test helpers: one comparison against a float64 reference, tolerances per dtype."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# the checkout's root (tests/ lies in it)
ROOT = Path(__file__).resolve().parent.parent

# Relative error bounds: max |actual - expected| / max |expected| (0 tolerated for exact ops).
TOLERANCE = {
    np.dtype(np.float32): 1e-5,
    np.dtype(np.float16): 1e-2,
    np.dtype(np.int32): 0.0,
    np.dtype(np.uint32): 0.0,
}


def relative_error(actual: Any, expected: Any) -> float:
    """max |a - e| / max |e| over all elements, computed in float64 (0 for empty inputs)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"shape {a.shape} != expected {e.shape}"
    if e.size == 0:
        return 0.0
    scale = np.max(np.abs(e))
    diff = np.max(np.abs(a - e))
    return float(diff / scale) if scale > 0 else float(diff)


def assert_close(actual: Any, expected: Any, *, dtype: Any = np.float32,
                 tol: float | None = None) -> None:
    """Assert `actual` matches the float64 `expected` within the dtype's relative tolerance.

    NaN and inf must appear in the same places in both.
    """
    a = np.asarray(actual)
    e = np.asarray(expected)
    bound = TOLERANCE[np.dtype(dtype)] if tol is None else tol
    assert a.shape == e.shape, f"shape {a.shape} != expected {e.shape}"
    finite = np.isfinite(e)
    np.testing.assert_array_equal(np.isfinite(a), finite, err_msg="non-finite values differ")
    if not finite.all():
        np.testing.assert_array_equal(a[~finite], e[~finite])
    err = relative_error(a[finite], e[finite])
    assert err <= bound, f"relative error {err:.3g} exceeds {bound:.3g}"


def random_array(rng: np.random.Generator, shape: Any, dtype: Any = np.float32,
                 low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """Fresh random values (never zeros) of `dtype`."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        lo = max(int(low), 0) if dtype.kind == "u" else int(low)
        return rng.integers(lo, max(int(high), lo + 1) + 1, size=shape).astype(dtype)
    return rng.uniform(low, high, size=shape).astype(dtype)


def staircase(x: Any) -> Any:
    """Temporaries of four size classes one after the other (each dead before the next is
    made: the pool cannot lend one class's buffer to another), from a gpucore Buffer of
    float32; the result alone outlives the call."""
    from gpucore import Buffer, Kernel

    add = Kernel.cached("core/vector_add")
    dev, n = x.device, len(x)
    h = x
    for size in (n * 8, n * 4, n * 2, n):
        t = Buffer.empty(size, device=dev)
        add.dispatch(add.groups_for(n), h, x, t, n=n)
        h = t
    out = Buffer.empty(n, device=dev)
    add.dispatch(add.groups_for(n), h, h, out, n=n)
    return out
