"""Krea 2 transformers in one file, in Krea's original layout (what ComfyUI loads, bare or
under `model.diffusion_model.`; bf16, fp8, and ComfyUI's scaled fp8 read as its float values,
formats.float8; and GGUFs converted from them, their quantized matrices kept quantized by
`load_component`), read lazily under diffusers' Krea2Transformer2DModel names.

The mapping is diffusers' `convert_krea2_transformer_checkpoint_to_diffusers`
(loaders/single_file_utils.py): the top-level modules renamed (`first` img_in, `tmlp.0` /
`tmlp.2` time_embed.linear_1 / _2, `tproj.1` time_mod_proj, `txtmlp.0.scale` /
`txtmlp.1` / `txtmlp.3` txt_in's norm and linears, `txtfusion` text_fusion, `blocks`
transformer_blocks, `last` final_layer with `last.modulation.lin` its scale_shift_table), and
in every block `attn.wq` / `wk` / `wv` / `wo` / `gate` to_q / to_k / to_v / to_out.0 /
to_gate, `qknorm.qnorm.scale` / `knorm.scale` norm_q / norm_k, `mlp` ff, `prenorm.scale` /
`postnorm.scale` norm1 / norm2, and `mod.lin` (the six modulation vectors flattened) the
(6, dim) scale_shift_table. The sizes come from the shapes; the rotary settings
(`axes_dims_rope`, `rope_theta`) and `norm_eps` are Krea 2's unless `config` gives them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.gguf_file import tensor_file
from ..keymaps.dit_keys import block_count, key_of, prefix_of
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype

__all__ = ["is_krea2_file", "krea2_file_family", "load_krea2_file"]

_MARKERS = ("txtfusion.projector.weight", "blocks.0.attn.wq.weight")
_PREFIXES = (("first.", "img_in."), ("tmlp.0.", "time_embed.linear_1."),
             ("tmlp.2.", "time_embed.linear_2."), ("tproj.1.", "time_mod_proj."),
             ("txtmlp.0.scale", "txt_in.norm.weight"), ("txtmlp.1.", "txt_in.linear_1."),
             ("txtmlp.3.", "txt_in.linear_2."), ("txtfusion.", "text_fusion."),
             ("blocks.", "transformer_blocks."), ("last.linear.", "final_layer.linear."),
             ("last.norm.scale", "final_layer.norm.weight"),
             ("last.modulation.lin", "final_layer.scale_shift_table"))
_IN_BLOCKS = ((".attn.wq.", ".attn.to_q."), (".attn.wk.", ".attn.to_k."),
              (".attn.wv.", ".attn.to_v."), (".attn.wo.", ".attn.to_out.0."),
              (".attn.gate.", ".attn.to_gate."),
              (".attn.qknorm.qnorm.scale", ".attn.norm_q.weight"),
              (".attn.qknorm.knorm.scale", ".attn.norm_k.weight"), (".mlp.", ".ff."),
              (".prenorm.scale", ".norm1.weight"), (".postnorm.scale", ".norm2.weight"),
              (".mod.lin", ".scale_shift_table"))
_ROPE = {"axes_dims_rope": (32, 48, 48), "rope_theta": 1000.0, "norm_eps": 1e-5}
_WHAT = "Krea 2"


def is_krea2_file(file: TensorFile) -> bool:
    """The file holds a Krea 2 transformer in the original layout (bare or under
    model.diffusion_model.)."""
    prefix = prefix_of(file, "txtfusion.")
    return all(prefix + marker in file for marker in _MARKERS)


def krea2_file_family(path: str | os.PathLike[str]) -> str | None:
    """"krea-2" for a .safetensors or .gguf file holding a Krea 2 transformer, None otherwise
    (a broken file is left for loading to name). Reads the header only."""
    if Path(path).suffix.lower() not in (".safetensors", ".gguf") or not Path(path).is_file():
        return None
    try:
        return "krea-2" if is_krea2_file(tensor_file(path)) else None
    except (WeightsError, ValueError, OSError):
        return None


def _target(key: str) -> str:
    """diffusers' name of the original layout's `key` (the prefix gone)."""
    for old, new in _PREFIXES:
        if key.startswith(old):
            key = new + key[len(old):]
            break
    for old, new in _IN_BLOCKS:
        key = key.replace(old, new)
    return key


def load_krea2_file(path: str | os.PathLike[str], *, dtype: Any = None,
                    config: Mapping[str, Any] | None = None) -> ComponentWeights:
    """Lazy Krea2Transformer2DModel weights (diffusers' names) of an original-layout
    .safetensors or .gguf file, `.config` read from the shapes, `config` (a folder's
    transformer/config.json) laid under them for what shapes do not say. `dtype`: None (as
    stored, bf16 as float32), "float16" or "float32". WeightsError in one line for a file of
    something else. diffusers: `Krea2Transformer2DModel.from_single_file(path)`."""
    file = tensor_file(path)
    if not is_krea2_file(file):
        raise WeightsError(f"{file.path}: no {_MARKERS[0]} and {_MARKERS[1]} tensors: not a "
                           "Krea 2 transformer file")
    prefix = prefix_of(file, "txtfusion.")

    def shape(key: str) -> tuple[int, ...]:
        return tuple(file.shape(key_of(file, prefix, key, _WHAT)))

    hidden, in_channels = shape("first.weight")
    head = shape("blocks.0.attn.qknorm.qnorm.scale")[0]
    text = shape("txtmlp.0.scale")[0]
    fusion = "txtfusion.layerwise_blocks.0."
    text_head = shape(fusion + "attn.qknorm.qnorm.scale")[0]
    derived = {
        "_class_name": "Krea2Transformer2DModel", "in_channels": in_channels,
        "num_layers": block_count(file, prefix, "blocks."), "attention_head_dim": head,
        "num_attention_heads": hidden // head,
        "num_key_value_heads": shape("blocks.0.attn.wk.weight")[0] // head,
        "intermediate_size": shape("blocks.0.mlp.gate.weight")[0],
        "timestep_embed_dim": shape("tmlp.0.weight")[1], "text_hidden_dim": text,
        "num_text_layers": shape("txtfusion.projector.weight")[1],
        "text_num_attention_heads": text // text_head,
        "text_num_key_value_heads": shape(fusion + "attn.wk.weight")[0] // text_head,
        "text_intermediate_size": shape(fusion + "mlp.gate.weight")[0],
        "num_layerwise_text_blocks": block_count(file, prefix, "txtfusion.layerwise_blocks."),
        "num_refiner_text_blocks": block_count(file, prefix, "txtfusion.refiner_blocks.")}
    merged = {**_ROPE, **dict(config or {}), **derived}
    if sum(merged["axes_dims_rope"]) != head:
        merged["axes_dims_rope"] = (head // 4, head * 3 // 8, head * 3 // 8)
    refs: dict[str, TensorRef] = {}
    for name in file.keys():
        if not name.startswith(prefix):
            continue
        key, stored = _target(name[len(prefix):]), tuple(file.shape(name))
        if key.startswith("transformer_blocks.") and key.endswith(".scale_shift_table"):
            stored = (6, math.prod(stored) // 6)  # the six vectors, flattened in the file
        refs[key] = TensorRef(file, name, stored)
    return ComponentWeights("transformer", merged, refs, dtype=resolve_dtype(dtype))
