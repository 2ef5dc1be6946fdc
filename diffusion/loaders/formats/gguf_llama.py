"""A llama.cpp GGUF of a Llama-architecture model (Mistral's too: `general.architecture`
"llama") read with its q and k rows in transformers' order.

llama.cpp's converter reorders each attention head's q and k rows for its rotary layout,
which turns adjacent pairs where transformers turns the two halves of a head
(convert_hf_to_gguf.py `LlamaModel.permute`: head rows (2, D/2) stored as (D/2, 2)). Reading
them back is the inverse permutation of whole rows (ComfyUI-GGUF's `llama_permute`); a
quantized matrix's rows are whole blocks, so its stored bytes are permuted as they are and
stay quantized.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import WeightsError
from .gguf_file import GGUFFile

__all__ = ["LlamaGGUFFile", "head_rows"]

_Q, _K = ".attn_q.weight", ".attn_k.weight"


def head_rows(rows: int, heads: int) -> np.ndarray:
    """Indices that put a llama.cpp q/k matrix's `rows` (of `heads` heads) in transformers'
    order: `hf = stored[head_rows(...)]`."""
    width = rows // heads
    return np.arange(rows).reshape(heads, width // 2, 2).swapaxes(1, 2).reshape(-1)


class LlamaGGUFFile(GGUFFile):
    """A GGUFFile whose `blk.N.attn_q` / `attn_k` tensors read (`raw`, `read`) with their rows
    un-permuted, the head counts from the file's `llama.attention.head_count(_kv)`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        try:
            self.heads = int(self.metadata["llama.attention.head_count"])
            self.kv_heads = int(self.metadata.get("llama.attention.head_count_kv",
                                                  self.heads))
        except (KeyError, TypeError, ValueError):
            raise WeightsError(f"{self.path}: no llama.attention.head_count metadata: not a "
                               "llama.cpp Llama/Mistral GGUF; re-convert it") from None

    def _order(self, key: str) -> np.ndarray | None:
        if key.endswith(_Q):
            return head_rows(self.shape(key)[0], self.heads)
        if key.endswith(_K):
            return head_rows(self.shape(key)[0], self.kv_heads)
        return None

    def raw(self, key: str) -> np.ndarray:
        stored = super().raw(key)
        order = self._order(key)
        if order is None:
            return stored
        return np.ascontiguousarray(stored.reshape(len(order), -1)[order]).reshape(-1)

    def read(self, key: str, *, rows: tuple[int, int] | None = None) -> np.ndarray:
        order = self._order(key)
        if order is None:
            return super().read(key, rows=rows)
        values = super().read(key)
        if self.format(key) in ("f32", "f16"):  # read from the tensor, not through raw()
            values = values[order]
        return values[rows[0]:rows[1]] if rows is not None else values
