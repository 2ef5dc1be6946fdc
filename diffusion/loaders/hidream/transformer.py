"""HiDream-I1 transformers (Full, Dev, Fast: HiDreamImageTransformer2DModel), read lazily
under diffusers' names: a diffusers `transformer/` folder (config.json and
diffusion_pytorch_model safetensors, sharded or not), or one file of the original HiDream-I1
tensors, as ComfyUI's hidream_i1_*.safetensors ship them (bare, or under
`model.diffusion_model.` beside a checkpoint's other parts, which are not read).

The original names are diffusers' own (its single-file conversion only strips the prefix).
From a file, the widths, depths, expert count and text widths come from the shapes; the head
width, rotary axes, top-k, patch size, resolution and the Llama layer each block reads are
HiDream-I1's unless `config` gives them (the shapes cannot say)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import read_json, weight_refs
from ..formats.gguf_file import tensor_file
from ..keymaps.dit_keys import block_count, key_of, prefix_of
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype

__all__ = ["hidream_file_family", "is_hidream_file", "load_hidream_transformer"]

_CLASS = "HiDreamImageTransformer2DModel"
# diffusers' detection key for a HiDream file (single_file_utils' CHECKPOINT_KEY_NAMES)
_MARKER = "double_stream_blocks.0.block.adaLN_modulation.1.bias"
# HiDream-I1's transformer/config.json, for what the shapes do not say: blocks 0-31 read
# Llama layers 0-31, the last 16 the last layer again
_HIDREAM_I1: dict[str, Any] = {
    "_class_name": _CLASS, "patch_size": 2, "attention_head_dim": 128,
    "num_activated_experts": 2, "axes_dims_rope": (64, 32, 32), "max_resolution": (128, 128),
    "llama_layers": list(range(32)) + [31] * 16,
}

# the model's top-level modules: a bare file's other tensors are not the transformer's
_MODULES = frozenset(("t_embedder", "p_embedder", "x_embedder", "double_stream_blocks",
                      "single_stream_blocks", "final_layer", "caption_projection"))


def is_hidream_file(file: TensorFile) -> bool:
    """The file holds a HiDream-I1 transformer (bare or under model.diffusion_model.)."""
    return prefix_of(file, "double_stream_blocks.") + _MARKER in file


def hidream_file_family(path: str | os.PathLike[str]) -> str | None:
    """"hidream" for a .safetensors file holding a HiDream-I1 transformer, None otherwise (a
    broken file is left for loading to name). Reads the header only."""
    if Path(path).suffix.lower() != ".safetensors" or not Path(path).is_file():
        return None
    try:
        return "hidream" if is_hidream_file(tensor_file(path)) else None
    except (WeightsError, ValueError, OSError):
        return None


def load_hidream_transformer(path: str | os.PathLike[str], *, dtype: Any = None,
                             variant: str | None = None,
                             config: Mapping[str, Any] | None = None) -> ComponentWeights:
    """Lazy HiDreamImageTransformer2DModel weights (diffusers' names) with `.config`, from a
    diffusers transformer folder or an original .safetensors file (its config from the
    shapes, `config` (a folder's transformer/config.json) laid under them). `dtype`: None (as
    stored, bf16 as float32), "float16" or "float32"; `variant`: a folder's e.g. "fp16".
    WeightsError naming the file or folder that is missing or not a HiDream transformer.
    diffusers: `HiDreamImageTransformer2DModel.from_pretrained(folder)` /
    `.from_single_file(path)`."""
    root = Path(path)
    if root.is_dir():
        folder_config = read_json(root / "config.json")
        if folder_config.get("_class_name", _CLASS) != _CLASS:
            raise WeightsError(f"{root / 'config.json'}: a {folder_config['_class_name']}, "
                               f"not a {_CLASS}")
        found, _where = weight_refs(root, "diffusion_pytorch_model", variant)
        return ComponentWeights("transformer", folder_config, found, dtype=resolve_dtype(dtype))
    file = tensor_file(root)
    if not is_hidream_file(file):
        raise WeightsError(f"{file.path}: no {_MARKER} tensor: not a HiDream-I1 transformer "
                           "file")
    prefix = prefix_of(file, "double_stream_blocks.")

    def shape(key: str) -> tuple[int, ...]:
        return tuple(file.shape(key_of(file, prefix, key, "HiDream-I1")))

    merged = {**_HIDREAM_I1, **dict(config or {})}
    dim, patch_width = shape("x_embedder.proj.weight")
    layers = block_count(file, prefix, "double_stream_blocks.")
    singles = block_count(file, prefix, "single_stream_blocks.")
    patch = merged["patch_size"]
    head_dim = merged["attention_head_dim"]
    if dim % head_dim:
        raise WeightsError(f"{file.path}: a {dim}-wide transformer does not split into heads "
                           f"of {head_dim}; pass the model's transformer/config.json")
    derived = {
        "in_channels": patch_width // (patch * patch),
        "out_channels": shape("final_layer.linear.weight")[0] // (patch * patch),
        "num_layers": layers, "num_single_layers": singles,
        "num_attention_heads": dim // head_dim,
        "num_routed_experts": block_count(file, prefix, "double_stream_blocks.0.block.ff_i"
                                                        ".experts."),
        "text_emb_dim": shape("p_embedder.pooled_embedder.linear_1.weight")[1],
        "caption_channels": [shape(f"caption_projection.{layers + singles}.linear.weight")[1],
                             shape("caption_projection.0.linear.weight")[1]],
    }
    if len(merged["llama_layers"]) != layers + singles:
        raise WeightsError(f"{file.path}: {layers + singles} blocks, but llama_layers names "
                           f"{len(merged['llama_layers'])}; pass the model's "
                           "transformer/config.json")
    refs = {name[len(prefix):]: TensorRef(file, name, file.shape(name))
            for name in file.keys() if name.startswith(prefix)
            and name[len(prefix):].split(".")[0] in _MODULES}
    return ComponentWeights("transformer", {**merged, **derived}, refs,
                            dtype=resolve_dtype(dtype))
