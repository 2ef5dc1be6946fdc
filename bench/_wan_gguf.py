"""A Wan transformer as a GGUF of random blocks, written fast enough for a lent GPU's minutes
(bench.wan_lowvram's `wan21_14b_gguf`): the Wan 2.1 T2V 14B's tensors in diffusers' names
(which the Wan file loader takes as they are), its 2-D weights whose rows are whole 256-value
super-blocks in Q4_K, the rest as floats (F16, 1-D ones F32), as city96's Q4_K files keep
their norms, modulations and the patch embedding.

The Q4_K blocks are not quantized from floats (minutes for 14B values on the host): they are
slices of one pool of random bytes whose scales `d` and `dmin` are set so that the values
come out about normal(0, 0.02)-sized and centred (value = d * scale * q - dmin * min, with
6-bit scales and mins and 4-bit q: mean d * 31.5 * 7.5 - dmin * 31.5). Every tensor is a
view into the pool, so the writer holds no copy; the file is as large as a real Q4_K's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_random_wan_gguf"]

_Q4_K = (256, 144)  # values and bytes of one super-block
_D = 8e-5
_DMIN = _D * 7.5


def _block_pool(nbytes: int, seed: int = 0) -> np.ndarray:
    """(n, 144) uint8 Q4_K super-blocks: random quants and sub-block scales, fixed d, dmin."""
    blocks = np.random.default_rng(seed).integers(0, 256, (nbytes // _Q4_K[1], _Q4_K[1]),
                                                  dtype=np.uint8)
    blocks[:, 0:2] = np.array([_D], np.float16).view(np.uint8)
    blocks[:, 2:4] = np.array([_DMIN], np.float16).view(np.uint8)
    return blocks


def write_random_wan_gguf(path: str | os.PathLike[str], shapes: dict[str, tuple[int, ...]],
                          *, pool_bytes: int = 256 << 20) -> dict[str, Any]:
    """Write `shapes` (diffusers' names -> numpy shapes of a WanTransformer3DModel) to `path`
    as the module doc says; returns {"q4_k": n, "f16": n, "f32": n, "bytes": file size}."""
    from diffusion.loaders.formats.gguf_file import import_gguf

    gguf = import_gguf()
    pool = _block_pool(pool_bytes)
    floats = np.random.default_rng(1).normal(0, 0.02, 1 << 22).astype(np.float32)
    rng = np.random.default_rng(2)
    path = Path(path)
    writer = gguf.GGUFWriter(path, arch="wan")
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q4_K_S))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    counts = {"q4_k": 0, "f16": 0, "f32": 0}
    for name, shape in shapes.items():
        n = int(np.prod(shape))
        if len(shape) == 2 and name.endswith(".weight") and shape[1] % _Q4_K[0] == 0:
            count = n // _Q4_K[0]
            start = int(rng.integers(0, max(1, len(pool) - count)))
            blocks = (pool[start:start + count] if count <= len(pool)
                      else np.resize(pool, (count, _Q4_K[1])))
            raw = blocks.reshape(shape[0], -1)
            writer.add_tensor(name, raw, raw_shape=raw.shape,
                              raw_dtype=gguf.GGMLQuantizationType.Q4_K)
            counts["q4_k"] += 1
            continue
        values = np.resize(floats, n).reshape(shape)
        if len(shape) == 1 and "norm" in name:
            values = values + 1
        kind = "f32" if len(shape) < 2 else "f16"
        writer.add_tensor(name, values.astype(np.float32 if kind == "f32" else np.float16))
        counts[kind] += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {**counts, "bytes": path.stat().st_size}
