"""8-bit floats (the `*-fp8` checkpoints' float8_e4m3fn and float8_e5m2) to float32: numpy has
no such dtypes, so the stored bytes go through a 256-entry table.

e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities, S.1111.111 is NaN ("fn":
finite). e5m2: 1 sign, 5 exponent (bias 15), 2 mantissa bits, IEEE-like (inf and NaN at
exponent 31). Both have subnormals at exponent 0. torch: `t.view(torch.float8_e4m3fn).float()`.

ComfyUI's "scaled" float8 files (`t5xxl_fp8_e4m3fn_scaled.safetensors`,
`sd3.5_large_fp8_scaled.safetensors`, `flux_dev_fp8_scaled_diffusion_model.safetensors`) store
each Linear weight as float8 beside a per-tensor float32 factor: `<layer>.scale_weight`, with a
`scaled_fp8` marker tensor under the model's prefix (ComfyUI's older `scaled_fp8_ops`), or
`<layer>.weight_scale` with a `<layer>.comfy_quant` JSON (its newer mixed-precision layout,
which comfy.utils.convert_old_quants turns the older one into). The weight is float8 value
times the factor (comfy.quant_ops TensorCoreFP8Layout.dequantize). Their `scale_input` /
`input_scale` only serve float8 matrix products and are not needed for the values.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FLOAT8", "float8_scales", "float8_to_float32"]


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


# keys that are no model tensors in a scaled file: factors, markers, input scales
_FACTORS = (".scale_weight", ".weight_scale")
_MARKERS = (".scaled_fp8", ".comfy_quant")
_INPUTS = (".scale_input", ".input_scale", ".weight_scale_2")


def _extra(key: str) -> bool:
    return key == "scaled_fp8" or key.endswith((*_FACTORS, *_MARKERS, *_INPUTS))


def float8_scales(tensors: dict[str, tuple[str, int]]) -> tuple[dict[str, str | None], set[str]]:
    """For a file's tensors (key -> (safetensors dtype, number of values)): (weight key -> key
    of its scale factor, or None where the weight is scaled otherwise than by one factor of
    float8 values, as ComfyUI's nvfp4 and int8 are; the keys to hide). Nothing for a file
    without a scaled weight."""
    if not any(key == "scaled_fp8" or key.endswith((*_FACTORS, *_MARKERS)) for key in tensors):
        return {}, set()
    hidden = {key for key in tensors if _extra(key)}
    scales: dict[str, str | None] = {}
    for key in hidden:
        suffix = next((end for end in _FACTORS if key.endswith(end)), None)
        weight = key.removesuffix(suffix) + ".weight" if suffix else ""
        if weight in tensors:
            one_float8 = tensors[weight][0] in FLOAT8 and tensors[key][1] == 1
            scales[weight] = key if one_float8 else None
    return scales, hidden
