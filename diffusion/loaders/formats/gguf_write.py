"""Writing a UNet as GGUF, the way ComfyUI-GGUF's and stable-diffusion.cpp's converters choose
per tensor: matrices and conv kernels quantized, the small and the 1-D kept as floats.

Which tensors are quantized (`plan_format`): every weight of 2+ dimensions with at least 1024
values whose rows (all but the first dimension) hold whole blocks; a 4-D conv kernel is written
as its [out, in*kh*kw] matrix with the true shape under `comfy.gguf.orig_shape.<name>`
(ComfyUI-GGUF's key). A Q4_K file's tensors whose rows are not whole 256-value super-blocks
(an SD UNet's 320- and 640-channel layers and most 3x3 convs: 2880, 5760 values a row) take
Q5_0, as llama.cpp's quantizer falls back (llama-quant.cpp: Q4_K -> Q5_0, Q5_K -> Q5_1,
Q6_K -> Q8_0; ComfyUI-GGUF's files come from it): SD 1.5's UNet at 0.29 of its float16 bytes,
not the 0.40 of keeping them F16. Other 2+-D tensors are F16, 1-D ones (biases, norms) F32.
gguf-py quantizes Q8_0, Q5_0/Q5_1, Q4_0/Q4_1 (and writes F16/BF16); the K formats it only
reads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from ..errors import WeightsError
from .gguf_file import ORIG_SHAPE_KEY, import_gguf
from .gguf_kquant import quantize_q4_k

__all__ = ["WRITABLE", "plan_format", "write_gguf"]

WRITABLE = ("q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "q4_k", "f16", "bf16")
_BLOCK = {"q8_0": 32, "q5_1": 32, "q5_0": 32, "q4_1": 32, "q4_0": 32, "q4_k": 256, "f16": 1,
          "bf16": 1}


# llama.cpp's format for rows that are not whole super-blocks of a K format
_FALLBACK = {"q4_k": "q5_0"}


def plan_format(shape: tuple[int, ...], format: str) -> str:
    """The format a tensor of `shape` is written in when the file's type is `format`."""
    if len(shape) < 2 or math.prod(shape) < 1024:
        return "f32" if len(shape) < 2 else "f16"
    row = math.prod(shape[1:])
    for kind in (format, _FALLBACK.get(format)):
        if kind is not None and row % _BLOCK[kind] == 0:
            return kind
    return "f16"


def write_gguf(path: str | os.PathLike[str], tensors: Iterable[tuple[str, np.ndarray]],
               format: str, *, architecture: str, metadata: Mapping[str, str] | None = None,
               keep_float: Callable[[str], bool] | None = None) -> dict[str, int]:
    """Write `tensors` (name, float array) to the GGUF file `path` in `format` (WRITABLE)
    following plan_format (a name `keep_float` accepts is written as floats, F16 or F32), with
    `metadata`'s strings beside the architecture; the file appears whole or not at all
    (written beside, renamed). Returns {format: tensors written in it}. gguf-py: GGUFWriter +
    gguf.quants.quantize."""
    gguf = import_gguf()
    format = format.lower()
    if format not in WRITABLE:
        raise ValueError(f"cannot write {format!r}: we write {', '.join(WRITABLE)} (gguf-py "
                         "quantizes all but Q4_K, ours: gguf_kquant; for Q5_K/Q6_K use "
                         "stable-diffusion.cpp's convert)")
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(partial, arch=architecture)
    file_type = "MOSTLY_Q4_K_S" if format == "q4_k" else f"MOSTLY_{format.upper()}"
    writer.add_file_type(int(gguf.LlamaFileType[file_type]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value in (metadata or {}).items():
        writer.add_string(key, value)
    counts: dict[str, int] = {}
    try:
        for name, array in tensors:
            values = np.asarray(array, np.float32)
            kind = plan_format(values.shape, "f16" if keep_float and keep_float(name)
                               else format)
            counts[kind] = counts.get(kind, 0) + 1
            if kind in ("f32", "f16"):
                writer.add_tensor(name, values.astype(np.float16 if kind == "f16" else np.float32))
                continue
            matrix = values.reshape(values.shape[0], -1)
            if matrix.shape != values.shape:
                writer.add_array(ORIG_SHAPE_KEY + name, list(values.shape))
            qtype = gguf.GGMLQuantizationType[kind.upper()]
            blocks = (quantize_q4_k(matrix) if kind == "q4_k"
                      else gguf.quants.quantize(matrix, qtype))
            writer.add_tensor(name, blocks, raw_shape=blocks.shape, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        partial.replace(path)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    if not counts:
        path.unlink(missing_ok=True)
        raise WeightsError(f"{path}: nothing to write (no tensors given)")
    return counts
