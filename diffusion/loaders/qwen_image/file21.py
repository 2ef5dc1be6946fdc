"""Qwen-Image 2.1 transformers in one file, as ComfyUI loads them (bare or under
`model.diffusion_model.`; bf16, fp8, and ComfyUI's scaled fp8 read as its float values,
formats.float8; and GGUFs converted from them, their quantized matrices kept quantized by
`load_component(slices=True)`), read lazily under diffusers' QwenImage21Transformer2DModel
names.

The mapping is diffusers' `convert_qwen_image21_transformer_checkpoint_to_diffusers`
(loaders/single_file_utils.py): the names are diffusers' but for each block's SwiGLU, which
ComfyUI fuses into one `img_mlp.gate_up` matrix, gate rows first; its halves are read as
`img_mlp.gate_layer` and `img_mlp.proj` (`SafetensorsFile.read(rows=...)` reads one half
without the other). A file with the halves apart reads as stored. The widths and depths come
from the shapes; the patch size, rotary axes, `eps` and `causal_condition` are the folder
config's where `config` gives one, else diffusers' defaults (patch 1; the head split as
Qwen-Image's (16, 56, 56) of 128, each axis even).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.gguf_file import tensor_file
from ..keymaps.dit_keys import block_count, key_of, prefix_of, split_rows
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype

__all__ = ["is_qwenimage21_file", "load_qwenimage21_file", "qwenimage21_file_family"]

_MARKERS = ("txt_in.text_norm.weight", "transformer_blocks.0.attn.norm_q.weight")
_FUSED = ".img_mlp.gate_up.weight"
_DEFAULTS = {"patch_size": 1, "axes_dims_rope": (16, 56, 56)}
_WHAT = "Qwen-Image 2.1"


def is_qwenimage21_file(file: TensorFile) -> bool:
    """The file holds a Qwen-Image 2.1 transformer (bare or under model.diffusion_model.)."""
    prefix = prefix_of(file, "transformer_blocks.")
    return all(prefix + marker in file for marker in _MARKERS)


def qwenimage21_file_family(path: str | os.PathLike[str]) -> str | None:
    """"qwen-image-2.1" for a .safetensors or .gguf file holding a Qwen-Image 2.1
    transformer, None otherwise (a broken file is left for loading to name). Reads the header
    only."""
    if Path(path).suffix.lower() not in (".safetensors", ".gguf") or not Path(path).is_file():
        return None
    try:
        return "qwen-image-2.1" if is_qwenimage21_file(tensor_file(path)) else None
    except (WeightsError, ValueError, OSError):
        return None


def load_qwenimage21_file(path: str | os.PathLike[str], *, dtype: Any = None,
                          config: Mapping[str, Any] | None = None) -> ComponentWeights:
    """Lazy QwenImage21Transformer2DModel weights of a .safetensors or .gguf file, `.config`
    read from the shapes, `config` (a folder's transformer/config.json) laid under them for
    what shapes do not say. `dtype`: None (as stored, bf16 as float32), "float16" or
    "float32". WeightsError in one line for a file of something else. diffusers:
    `QwenImage21Transformer2DModel.from_single_file(path)`."""
    file = tensor_file(path)
    if not is_qwenimage21_file(file):
        raise WeightsError(f"{file.path}: no {_MARKERS[0]} and {_MARKERS[1]} tensors: not a "
                           "Qwen-Image 2.1 transformer file")
    prefix = prefix_of(file, "transformer_blocks.")

    def shape(key: str) -> tuple[int, ...]:
        return tuple(file.shape(key_of(file, prefix, key, _WHAT)))

    given = {**_DEFAULTS, **dict(config or {})}
    patch = int(given["patch_size"])
    hidden, patch_width = shape("img_in.weight")
    head = shape("transformer_blocks.0.attn.norm_q.weight")[0]
    fused = prefix + "transformer_blocks.0" + _FUSED
    mlp = file.shape(fused)[0] // 2 if fused in file else shape(
        "transformer_blocks.0.img_mlp.proj.weight")[0]
    derived = {
        "_class_name": "QwenImage21Transformer2DModel", "patch_size": patch,
        "in_channels": patch_width // patch ** 2,
        "out_channels": shape("proj_out.weight")[0] // patch ** 2,
        "num_layers": block_count(file, prefix, "transformer_blocks."),
        "attention_head_dim": head, "num_attention_heads": hidden // head,
        "context_in_dim": shape("txt_in.text_norm.weight")[0],
        "mlp_ratio": mlp // hidden if mlp % hidden == 0 else mlp / hidden}
    merged = {**given, **derived}
    if sum(merged["axes_dims_rope"]) != head:  # Qwen-Image's split, each axis even
        side = head * 7 // 32 * 2
        merged["axes_dims_rope"] = (head - 2 * side, side, side)
    refs: dict[str, TensorRef] = {}
    for name in file.keys():
        if not name.startswith(prefix):
            continue
        key = name[len(prefix):]
        if key.endswith(_FUSED):
            stem = key.removesuffix("gate_up.weight")
            refs.update(split_rows(file, name, (stem + "gate_layer.weight", stem + "proj.weight"),
                                   (mlp, mlp)))
        else:
            refs[key] = TensorRef(file, name, tuple(file.shape(name)))
    return ComponentWeights("transformer", merged, refs, dtype=resolve_dtype(dtype))
