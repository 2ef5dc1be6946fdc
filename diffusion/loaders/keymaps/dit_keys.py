"""What the single-file readers of the diffusion transformers (BFL's FLUX, Chroma, Stability's
SD3) share: BFL's block names, prefixed key lookup with clear errors, block counts, fused
matrices split by rows, and weights whose adaLN (shift, scale) halves are read swapped into
diffusers' (scale, shift)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from gpucore import Device

from ..device_cast import Bf16Tensor
from ..errors import WeightsError
from ..weights import ComponentWeights, TensorFile, TensorRef

__all__ = ["BFL_DOUBLE", "BFL_DOUBLE_QKV", "BFL_SINGLE", "BFL_SINGLE_SPLIT", "PREFIX",
           "SwappedHalvesWeights", "block_count", "key_of", "prefix_of", "split_rows"]

PREFIX = "model.diffusion_model."  # ComfyUI's and SAI's all-in-one checkpoints

# BFL's FLUX block layout in diffusers' names, as FLUX.1 and Chroma share it (FLUX.1's blocks
# add their modulation layers: loaders/flow/flux_file.py). double_blocks.N.<BFL> ->
# transformer_blocks.N.<diffusers>; single_blocks.N.<BFL> -> single_transformer_blocks.N.<...>
BFL_DOUBLE = {
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight",
    "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
    "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
    "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj", "txt_mlp.2": "ff_context.net.2",
    "img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out",
}
# the fused q/k/v matrices, split by rows
BFL_DOUBLE_QKV = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
                  "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}
BFL_SINGLE = {"norm.query_norm.scale": "attn.norm_q.weight",
              "norm.key_norm.scale": "attn.norm_k.weight", "linear2": "proj_out"}
# a single block's `linear1` split by rows: q, k, v and the MLP's input
BFL_SINGLE_SPLIT = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")


class SwappedHalvesWeights(ComponentWeights):
    """ComponentWeights whose `swapped` tensors are read as their two halves (along the first
    axis) in the other order: diffusers' `swap_scale_shift`."""

    def __init__(self, name: str, config: dict[str, Any], refs: Mapping[str, TensorRef], *,
                 swapped: Collection[str], dtype: np.dtype | None = None) -> None:
        super().__init__(name, config, refs, dtype=dtype)
        self.swapped = frozenset(swapped)

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.swapped:
            return super().__getitem__(key)
        ref = self._refs[key]
        half = ref.shape[0] // 2
        first, second = (ref.file.read(ref.key, rows=rows)
                         for rows in ((0, half), (half, 2 * half)))
        array = np.concatenate([second, first])
        dtype = self.dtype_of(key)
        if dtype is not None and array.dtype.kind == "f":
            array = array.astype(dtype, copy=False)
        return array

    def on_device(self, key: str, device: Device) -> Bf16Tensor | None:
        """ComponentWeights.on_device, but a swapped tensor is read by __getitem__ (the stored
        bytes are not its values in order)."""
        return None if key in self.swapped else super().on_device(key, device)


def prefix_of(file: TensorFile, marker: str) -> str:
    """PREFIX when the file's `marker`* tensors sit under it, else ""."""
    return PREFIX if any(k.startswith(PREFIX + marker) for k in file.keys()) else ""


def key_of(file: TensorFile, prefix: str, key: str, what: str) -> str:
    """The file's name for `key`, or WeightsError naming what is missing."""
    name = prefix + key
    if name not in file:
        raise WeightsError(f"{file.path}: {what} tensor {name!r} is missing; the file is "
                           f"incomplete or not a {what} checkpoint")
    return name


def block_count(file: TensorFile, prefix: str, kind: str) -> int:
    """1 + the highest N of `kind`N.* tensors (0 when there are none)."""
    found = {int(key[len(prefix) + len(kind):].split(".")[0]) for key in file.keys()
             if key.startswith(prefix + kind)}
    return max(found) + 1 if found else 0


def split_rows(file: TensorFile, name: str, targets: tuple[str, ...],
               sizes: tuple[int, ...]) -> dict[str, TensorRef]:
    """Refs to consecutive row ranges of tensor `name` (a fused q/k/v ...), one per target."""
    refs, start, rest = {}, 0, file.shape(name)[1:]
    for target, size in zip(targets, sizes):
        refs[target] = TensorRef(file, name, (size, *rest), rows=(start, start + size))
        start += size
    return refs
