"""LoRAs on quantized weights (a GGUF UNet's Q8_0 ... Q4_K layers): merged on load, requantized.

The choice, against patching at dequantization (ComfyUI-GGUF's way: the LoRA's update added to
the weight each time the layer dequantizes it):

- Sampling runs the quantized model unchanged: no low-rank GEMM, no full-size delta to add,
  per layer per step (patching at dequantization pays that on every one of the ~20-50 steps).
- Memory stays the quantized size: a kept float delta per patched layer would cost 2-4 bytes a
  value next to Q8_0's 1.06 (Q4_K's 0.56): the memory GGUF is there to save.
- A replayed UNet step sees the patched weights: the new blocks are written into the same
  buffer when the format keeps its size (diffusion.pipelines.sd.capture), as float weights are.
- Removing LoRAs is exact: the original blocks are kept on the host (as the float path keeps
  the original floats) and written back, bit for bit.

The cost is one more rounding: W + dW is quantized again, so the patched layer carries the
format's error around the patched values (about the error the file already had around W),
and merging takes host time once per LoRA change. gguf-py quantizes Q8_0, Q5_0/Q5_1,
Q4_0/Q4_1, F16 and BF16, and we Q4_K (diffusion.loaders.formats.gguf_kquant); a layer stored in
Q5_K or Q6_K, which nothing here writes, is stored as Q8_0 once patched: those layers grow
(8.5 bits a value instead of 5.5-6.6) and their error shrinks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gpustd.quant import QuantizedTensor

from ..loaders.formats.gguf_file import import_gguf
from ..loaders.formats.gguf_kquant import quantize_q4_k
from ..loaders.formats.gguf_write import WRITABLE

__all__ = ["Blocks", "merged", "values"]

REQUANTIZE_K_AS = "q8_0"


class Blocks(NamedTuple):
    """A quantized weight's stored form: its bytes and format."""

    raw: np.ndarray
    format: str

    @classmethod
    def of(cls, weight: QuantizedTensor) -> Blocks:
        return cls(weight.raw(), weight.format)


def values(blocks: Blocks, shape: tuple[int, ...]) -> np.ndarray:
    """The weight's values as float64 (gguf-py's dequantize, which our shader equals)."""
    gguf = import_gguf()
    qtype = gguf.GGMLQuantizationType[blocks.format.upper()]
    rows = shape[0]
    flat = gguf.quants.dequantize(blocks.raw.reshape(rows, -1), qtype)
    return np.asarray(flat, np.float64).reshape(shape)


def merged(total: np.ndarray, format: str) -> Blocks:
    """`total` (the patched values) quantized again: in `format` where gguf-py can write it,
    else (K formats) in Q8_0."""
    gguf = import_gguf()
    target = format if format in WRITABLE else REQUANTIZE_K_AS
    qtype = gguf.GGMLQuantizationType[target.upper()]
    matrix = total.reshape(total.shape[0], -1).astype(np.float32)
    quantized = (quantize_q4_k(matrix) if target == "q4_k"
                 else gguf.quants.quantize(matrix, qtype))
    return Blocks(np.ascontiguousarray(quantized).view(np.uint8).reshape(-1), target)
