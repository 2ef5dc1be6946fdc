"""Shared test helpers: one comparison against a float64 reference, tolerances per dtype."""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import numpy as np

# the checkout's root (tests/ lies in it)
ROOT = Path(__file__).resolve().parent.parent

# Per-element bounds (numpy's allclose rule, see assert_close): rtol, and atol unless given.
TOLERANCE = {
    np.dtype(np.float32): 1e-5,
    np.dtype(np.float16): 1e-2,
    np.dtype(np.int32): 0.0,
    np.dtype(np.uint32): 0.0,
}


def module_of_tests(path: str) -> ModuleType:
    """The test module at `path` under tests/ (as "diffusion/pipelines/test_sd_pipeline.py"),
    for a test of another folder that shares its helpers: pytest puts a test's folder on
    sys.path only once it collects a test there, which a run of one folder never does."""
    folder, name = (ROOT / "tests" / path).parent, Path(path).stem
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module(name)


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


def worst_element(actual: Any, expected: Any, *, rtol: float,
                  atol: float) -> tuple[float, tuple[int, ...]]:
    """The largest |a - e| / (atol + rtol |e|) over all elements and where it is, in float64
    (<= 1 where numpy.allclose(a, e, rtol, atol) holds; 0 for empty inputs; inf where a
    nonzero difference meets a zero bound)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"shape {a.shape} != expected {e.shape}"
    if e.size == 0:
        return 0.0, ()
    diff = np.abs(a - e)
    bound = atol + rtol * np.abs(e)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / bound)
    where = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    return float(ratio[where]), tuple(int(i) for i in where)


def rms(values: Any) -> float:
    """The root mean square of `values` in float64 (0 for empty inputs)."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.sqrt(np.mean(v * v))) if v.size else 0.0


def assert_close(actual: Any, expected: Any, *, dtype: Any = np.float32,
                 tol: float | None = None, atol: float | None = None) -> None:
    """Assert every element of `actual` lies within atol + tol * |e| of the float64
    `expected` e (numpy's allclose rule, per element: a small element is held to its own size
    and the data's typical size, never to the largest element's).

    `tol` defaults to the dtype's TOLERANCE; `atol` to tol times the root mean square of the
    expected values (tol where they are all 0), the error a sum of terms of the data's size
    makes where the result cancels to near 0: pass `atol` where another scale applies (an
    exact zero: 0). NaN and inf must appear in the same places in both. A failure names the
    worst element.
    """
    a = np.asarray(actual)
    e = np.asarray(expected)
    rtol = TOLERANCE[np.dtype(dtype)] if tol is None else tol
    assert a.shape == e.shape, f"shape {a.shape} != expected {e.shape}"
    finite = np.isfinite(e)
    np.testing.assert_array_equal(np.isfinite(a), finite, err_msg="non-finite values differ")
    if not finite.all():
        np.testing.assert_array_equal(a[~finite], e[~finite])
    af = np.where(finite, a, 0)
    ef = np.where(finite, e, 0)
    if atol is None:
        atol = rtol * (rms(ef[finite]) or 1.0)
    ratio, where = worst_element(af, ef, rtol=rtol, atol=atol)
    if ratio > 1:
        got, want = float(af[where]), float(ef[where])
        raise AssertionError(
            f"element {list(where)}: {got:.9g} != expected {want:.9g}: |difference| "
            f"{abs(got - want):.3g} > atol {atol:.3g} + rtol {rtol:.3g} * |expected| "
            f"({ratio:.3g}x the bound)")


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


# SD pictures (uint8) against a float reference: the pipeline tests' mean |difference| bound
PICTURE_MEAN_LEVELS = 0.5


def assert_input_matters(expected: Any, without: Any, what: str) -> None:
    """A reference picture (floats in [0, 1]) and the same without one input (`what`) differ by
    at least 10x the pictures' mean tolerance, so a comparison within it sees that input."""
    moved = float(np.abs(np.asarray(expected, np.float64) - without).mean() * 255)
    assert moved >= 10 * PICTURE_MEAN_LEVELS, (
        f"{what} moves the picture by {moved:.2f} levels on average: under 10x the "
        f"{PICTURE_MEAN_LEVELS}-level tolerance")


def generate_within_budget(model: Any, floor: int, room: int, tries: int = 6,
                           **settings: Any) -> Any:
    """`model.generate(**settings)`'s first image under `--max-vram floor + room`, the budget
    raised to what a MemoryLimitError says the device needs there (plus 64 KiB) after each
    (the least budget counts weights only, and the activations' room measured on lavapipe is
    short on a GPU, whose f16 buffers round otherwise); the caller still asserts that units
    left the GPU, so the budget cannot grow past the point of the test."""
    import gpucore
    from diffusion.pipelines.sd.memory import MemoryMode

    budget = floor + room
    for attempt in range(tries):
        model.set_memory_mode(MemoryMode(max_vram=budget))
        try:
            return model.generate(**settings).images[0]
        except gpucore.MemoryLimitError as error:
            if attempt == tries - 1:
                raise
            budget = max(budget, error.needed) + (1 << 16)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def counted(device: Any) -> Iterator[list[int]]:
    """[dispatches, uploads] `device` (a gpucore.Device) makes inside: bench/_harness.py's
    dispatch count and its write_bytes calls."""
    from bench._harness import counting

    counts = [0, 0]
    write = device.write_bytes

    def upload(*args: Any) -> None:
        counts[1] += 1
        write(*args)

    with counting(device) as dispatches, mock.patch.object(device, "write_bytes", upload):
        yield counts
    counts[0] = sum(dispatches.values())
