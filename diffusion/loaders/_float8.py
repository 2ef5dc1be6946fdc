"""8-bit floats (the `*-fp8` checkpoints' float8_e4m3fn and float8_e5m2) to float32: numpy has
no such dtypes, so the stored bytes go through a 256-entry table.

e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities, S.1111.111 is NaN ("fn":
finite). e5m2: 1 sign, 5 exponent (bias 15), 2 mantissa bits, IEEE-like (inf and NaN at
exponent 31). Both have subnormals at exponent 0. torch: `t.view(torch.float8_e4m3fn).float()`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FLOAT8", "float8_to_float32"]


def _table(exponent_bits: int, mantissa_bits: int, *, finite: bool) -> np.ndarray:
    codes = np.arange(256, dtype=np.int64)
    sign = np.where(codes >> 7, -1.0, 1.0)
    exponent = (codes >> mantissa_bits) & ((1 << exponent_bits) - 1)
    mantissa = codes & ((1 << mantissa_bits) - 1)
    bias = (1 << (exponent_bits - 1)) - 1
    scale = float(1 << mantissa_bits)
    normal = (1 + mantissa / scale) * np.exp2(exponent - bias)
    subnormal = (mantissa / scale) * np.exp2(1 - bias)
    values = sign * np.where(exponent == 0, subnormal, normal)
    top = exponent == (1 << exponent_bits) - 1
    if finite:  # only all-ones exponent and mantissa is NaN
        nan = top & (mantissa == (1 << mantissa_bits) - 1)
    else:
        nan = top & (mantissa != 0)
        values[top & (mantissa == 0)] = sign[top & (mantissa == 0)] * np.inf
    values[nan] = np.copysign(np.nan, sign[nan])  # the sign bit kept, as torch does
    return values.astype(np.float32)


# safetensors dtype name -> float32 value of each byte
FLOAT8 = {"F8_E4M3": _table(4, 3, finite=True), "F8_E5M2": _table(5, 2, finite=False)}


def float8_to_float32(raw: np.ndarray, kind: str) -> np.ndarray:
    """float32 values of the float8 bytes `raw` (uint8, any shape); kind "F8_E4M3"/"F8_E5M2"."""
    return FLOAT8[kind][raw]
