"""Q4_K blocks written by us: gguf-py reads the K formats but only quantizes the simple ones.

A plain min/max quantizer in ggml's Q4_K layout (block_q4_K: f16 d and dmin, twelve bytes of
6-bit sub-block scales and mins, 128 bytes of 4-bit values for 256 values): each 32-value
sub-block maps [min(x, 0), max(x)] onto 0..15. ggml's own quantizer searches each sub-block's
scale and min to minimise the error; this one does not, so its error is a little above ggml's
(on Gaussian weights about 8% of the mean magnitude, Q4_0's is 9%). gguf-py's dequantize (and
our shader, bitwise equal to it) read the result as any Q4_K file.
"""

from __future__ import annotations

import numpy as np

__all__ = ["quantize_q4_k"]


def quantize_q4_k(matrix: np.ndarray) -> np.ndarray:
    """Rows of float values (a multiple of 256 per row) as uint8 Q4_K blocks, one row each
    (rows, n / 256 * 144). gguf-py: `gguf.quants.quantize(matrix, Q4_K)` (not implemented
    there)."""
    rows = matrix.shape[0]
    x = np.asarray(matrix, np.float32).reshape(-1, 8, 32)  # super-blocks, sub-blocks, values
    low = np.minimum(x.min(axis=2), 0.0)
    scale_f, min_f = (x.max(axis=2) - low) / 15.0, -low
    d = (scale_f.max(axis=1) / 63.0).astype(np.float16)
    dmin = (min_f.max(axis=1) / 63.0).astype(np.float16)
    d32, dmin32 = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(d32 > 0, np.clip(np.rint(scale_f / d32), 0, 63), 0).astype(np.uint8)
        mins = np.where(dmin32 > 0, np.clip(np.rint(min_f / dmin32), 0, 63), 0).astype(np.uint8)
        step = (d32 * scale)[:, :, None]
        q = np.where(step > 0, np.rint((x + (dmin32 * mins)[:, :, None]) / step), 0)
    q = np.clip(q, 0, 15).astype(np.uint8)
    # ggml's get_scale_min_k4: sub-blocks 0-3 in the low 6 bits of bytes 0-7, 4-7 split over
    # bytes 8-11 (low nibbles: scale, high: min) and the top 2 bits of bytes 0-7
    packed = np.zeros((x.shape[0], 12), np.uint8)
    packed[:, 0:4] = (scale[:, 0:4] & 63) | ((scale[:, 4:8] >> 4) << 6)
    packed[:, 4:8] = (mins[:, 0:4] & 63) | ((mins[:, 4:8] >> 4) << 6)
    packed[:, 8:12] = (scale[:, 4:8] & 0xF) | ((mins[:, 4:8] & 0xF) << 4)
    # each 64 values: sub-block 2k in the low nibbles, 2k + 1 in the high ones
    nibbles = (q[:, 0::2, :] | (q[:, 1::2, :] << 4)).reshape(x.shape[0], 128)
    blocks = np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2),
                             packed, nibbles], axis=1)
    return blocks.reshape(rows, -1)
