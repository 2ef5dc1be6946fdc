"""ERNIE-Image transformers in one file (what ComfyUI loads: diffusers' names, bare or under
`model.diffusion_model.`; bf16, fp8 and ComfyUI's scaled fp8 read as their float values, and
GGUFs, their quantized matrices kept quantized by `load_component`), read lazily under
ErnieImageTransformer2DModel's names. diffusers: `convert_ernie_image_transformer_checkpoint_
to_diffusers` (the prefix dropped). The sizes come from the shapes; the rotary settings
(`rope_axes_dim`, `rope_theta`) and `eps` are ERNIE-Image's unless `config` gives them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.gguf_file import tensor_file
from ..keymaps.dit_keys import block_count, key_of, prefix_of
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype

__all__ = ["ernie_image_file_family", "is_ernie_image_file", "load_ernie_image_file"]

_MARKERS = ("adaLN_modulation.1.weight", "layers.0.self_attention.to_q.weight")
_ROPE = {"rope_axes_dim": (32, 48, 48), "rope_theta": 256, "eps": 1e-6}
_WHAT = "ERNIE-Image"


def is_ernie_image_file(file: TensorFile) -> bool:
    """The file holds an ERNIE-Image transformer (bare or under model.diffusion_model.)."""
    prefix = prefix_of(file, "adaLN_modulation.")
    return all(prefix + marker in file for marker in _MARKERS)


def ernie_image_file_family(path: str | os.PathLike[str]) -> str | None:
    """"ernie-image" for a .safetensors or .gguf file holding an ERNIE-Image transformer,
    None otherwise (a broken file is left for loading to name). Reads the header only."""
    if Path(path).suffix.lower() not in (".safetensors", ".gguf") or not Path(path).is_file():
        return None
    try:
        return "ernie-image" if is_ernie_image_file(tensor_file(path)) else None
    except (WeightsError, ValueError, OSError):
        return None


def load_ernie_image_file(path: str | os.PathLike[str], *, dtype: Any = None,
                          config: Mapping[str, Any] | None = None) -> ComponentWeights:
    """Lazy ErnieImageTransformer2DModel weights of a .safetensors or .gguf file, `.config`
    read from the shapes, `config` (a folder's transformer/config.json) laid under them for
    what shapes do not say. `dtype`: None (as stored, bf16 as float32), "float16" or
    "float32". WeightsError in one line for a file of something else. diffusers:
    `ErnieImageTransformer2DModel.from_single_file(path)`."""
    file = tensor_file(path)
    if not is_ernie_image_file(file):
        raise WeightsError(f"{file.path}: no {_MARKERS[0]} and {_MARKERS[1]} tensors: not an "
                           "ERNIE-Image transformer file")
    prefix = prefix_of(file, "adaLN_modulation.")

    def shape(key: str) -> tuple[int, ...]:
        return tuple(file.shape(key_of(file, prefix, key, _WHAT)))

    hidden, in_channels = shape("x_embedder.proj.weight")[:2]
    head = shape("layers.0.self_attention.norm_q.weight")[0]
    text = prefix + "text_proj.weight"
    derived = {
        "_class_name": "ErnieImageTransformer2DModel", "hidden_size": hidden,
        "num_attention_heads": hidden // head, "in_channels": in_channels,
        "num_layers": block_count(file, prefix, "layers."),
        "ffn_hidden_size": shape("layers.0.mlp.gate_proj.weight")[0],
        "out_channels": shape("final_linear.weight")[0], "patch_size": 1,
        "text_in_dim": file.shape(text)[1] if text in file else hidden}
    merged = {**_ROPE, **dict(config or {}), **derived}
    if sum(merged["rope_axes_dim"]) != head:
        merged["rope_axes_dim"] = (head // 4, head * 3 // 8, head * 3 // 8)
    refs = {name[len(prefix):]: TensorRef(file, name, tuple(file.shape(name)))
            for name in file.keys() if name.startswith(prefix)}
    return ComponentWeights("transformer", merged, refs, dtype=resolve_dtype(dtype))
