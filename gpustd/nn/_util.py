"""Shared argument checks and the kernel cache of gpustd.nn."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import FeatureError, Kernel

from .._tensor import Tensor

__all__ = ["check_float", "check_same", "dummy", "kernel", "pair"]

FLOATS = (np.dtype(np.float32), np.dtype(np.float16))


def kernel(name: str, types: dict[str, Any] | None = None, *, entry: str = "main",
           parts: tuple[str, ...] = (), **constants: float) -> Kernel:
    """The Kernel for shaders/nn/<name>.wgsl (and its `parts`) with element types and
    overrides, built once."""
    return Kernel.cached(f"nn/{name}", parts=parts, entry=entry, constants=constants,
                         types=types)


def check_float(x: Any, name: str, op: str, ndim: int | None = None) -> Tensor:
    """`x` as a float32/float16 Tensor, or a TypeError/ValueError saying what is wrong."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a gpustd Tensor, got {type(x).__name__}; "
                        "upload with gpustd.asarray(...)")
    if x.dtype not in FLOATS:
        raise TypeError(f"{op}: {name} has dtype {x.dtype}; use float32 or float16 "
                        f"({name}.astype(np.float32))")
    if x.dtype == np.float16 and not x.device.has_f16:
        raise FeatureError("shader-f16", f"{op} on float16", x.device.info.label)
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D, got shape {x.shape}")
    return x


def check_same(op: str, x: Tensor, **others: Tensor | None) -> None:
    """Every non-None tensor of `others` has x's dtype and device."""
    for name, t in others.items():
        if t is None:
            continue
        check_float(t, name, op)
        if t.dtype != x.dtype:
            raise TypeError(f"{op}: {name} is {t.dtype} but the input is {x.dtype}; "
                            f"convert one with .astype(...)")
        if t.device is not x.device:
            raise ValueError(f"{op}: {name} is on {t.device.name}, the input on "
                             f"{x.device.name}; move it with .to(device)")


def dummy(x: Tensor, dtype: Any = None) -> Tensor:
    """A 1-element tensor of x's dtype (or `dtype`) on x's device, standing in for an absent
    optional binding."""
    kind = np.dtype(dtype or x.dtype)
    return x.device.keep(("nn dummy", kind), lambda: Tensor.zeros((1,), kind, device=x.device))


def pair(value: Any, name: str, op: str, *, minimum: int = 0) -> tuple[int, int]:
    """An int or a pair of ints as (h, w), each >= minimum."""
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}") from None
    if h < minimum or w < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return h, w
