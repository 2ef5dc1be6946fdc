"""Element types shared by numpy and WGSL."""

from __future__ import annotations

import numpy as np

__all__ = ["WGSL_SCALAR", "as_dtype", "wgsl_scalar"]

# numpy dtype -> WGSL scalar type name. complex64 is a pair of f32 (array<vec2<f32>> in WGSL).
WGSL_SCALAR: dict[np.dtype, str] = {
    np.dtype(np.float32): "f32",
    np.dtype(np.float16): "f16",
    np.dtype(np.int32): "i32",
    np.dtype(np.uint32): "u32",
    np.dtype(np.complex64): "f32",
}
_BY_WGSL: dict[str, np.dtype] = {"f32": np.dtype(np.float32), "f16": np.dtype(np.float16),
            "i32": np.dtype(np.int32), "u32": np.dtype(np.uint32)}


_KNOWN: dict[object, np.dtype] = {}  # as_dtype's answers by argument: asked per buffer


def as_dtype(dtype: object) -> np.dtype:
    """Normalize `dtype` (numpy dtype, type, name or WGSL name) to a supported numpy dtype."""
    try:
        return _KNOWN[dtype]
    except (KeyError, TypeError):  # TypeError: an unhashable argument (numpy says more)
        pass
    result = _as_dtype(dtype)
    try:
        _KNOWN[dtype] = result
    except TypeError:
        pass
    return result


def _as_dtype(dtype: object) -> np.dtype:
    if isinstance(dtype, str) and dtype in _BY_WGSL:
        return _BY_WGSL[dtype]
    try:
        result: np.dtype = np.dtype(dtype)  # type: ignore[call-overload]
    except TypeError as exc:
        raise TypeError(f"{dtype!r} is not a dtype") from exc
    if result not in WGSL_SCALAR:
        names = ", ".join(str(d) for d in WGSL_SCALAR)
        raise TypeError(f"dtype {result} is not supported on the GPU; use one of {names}")
    return result


def wgsl_scalar(dtype: object) -> str:
    """The WGSL scalar type for a numpy dtype (float32 -> 'f32')."""
    return WGSL_SCALAR[as_dtype(dtype)]
