"""AuraFlow transformers in one file (fal's original names, what ComfyUI loads: bare or under
`model.diffusion_model.`; `aura_flow_0.3.safetensors`, and models trained from it in that
layout), read lazily under AuraFlowTransformer2DModel's names: the renames of diffusers'
`convert_auraflow_transformer_checkpoint_to_diffusers`, the final modulation's halves
swapped. The sizes come from the shapes; the head width (256) from `config` (a folder's
transformer/config.json) where given."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.gguf_file import tensor_file
from ..keymaps.dit_keys import SwappedHalvesWeights, block_count, key_of, prefix_of
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype

__all__ = ["auraflow_file_family", "is_auraflow_file", "load_auraflow_file"]

_MARKERS = ("double_layers.0.attn.w2q.weight", "cond_seq_linear.weight")
_WHAT = "AuraFlow"
_TOP = {"register_tokens": "register_tokens", "t_embedder.mlp.0.weight":
        "time_step_proj.linear_1.weight", "t_embedder.mlp.0.bias": "time_step_proj.linear_1.bias",
        "t_embedder.mlp.2.weight": "time_step_proj.linear_2.weight",
        "t_embedder.mlp.2.bias": "time_step_proj.linear_2.bias",
        "cond_seq_linear.weight": "context_embedder.weight",
        "final_linear.weight": "proj_out.weight", "modF.1.weight": "norm_out.linear.weight",
        "positional_encoding": "pos_embed.pos_embed",
        "init_x_linear.weight": "pos_embed.proj.weight",
        "init_x_linear.bias": "pos_embed.proj.bias"}
_FF = {"c_fc1": "linear_1", "c_fc2": "linear_2", "c_proj": "out_projection"}
_DOUBLE = {**{f"{src}.{k}.weight": f"{dst}.{v}.weight" for src, dst in
              (("mlpX", "ff"), ("mlpC", "ff_context")) for k, v in _FF.items()},
           "modX.1.weight": "norm1.linear.weight",
           "modC.1.weight": "norm1_context.linear.weight",
           **{f"attn.{k}.weight": f"attn.{v}.weight" for k, v in (
               ("w2q", "to_q"), ("w2k", "to_k"), ("w2v", "to_v"), ("w2o", "to_out.0"),
               ("w1q", "add_q_proj"), ("w1k", "add_k_proj"), ("w1v", "add_v_proj"),
               ("w1o", "to_add_out"))}}
_SINGLE = {**{f"mlp.{k}.weight": f"ff.{v}.weight" for k, v in _FF.items()},
           "modCX.1.weight": "norm1.linear.weight",
           **{f"attn.{k}.weight": f"attn.{v}.weight" for k, v in (
               ("w1q", "to_q"), ("w1k", "to_k"), ("w1v", "to_v"), ("w1o", "to_out.0"))}}


def is_auraflow_file(file: TensorFile) -> bool:
    """The file holds an AuraFlow transformer in fal's names (bare or under
    model.diffusion_model.)."""
    prefix = prefix_of(file, "cond_seq_linear.")
    return all(prefix + marker in file for marker in _MARKERS)


def auraflow_file_family(path: str | os.PathLike[str]) -> str | None:
    """"auraflow" for a .safetensors or .gguf file holding an AuraFlow transformer, None
    otherwise (a broken file is left for loading to name). Reads the header only."""
    if Path(path).suffix.lower() not in (".safetensors", ".gguf") or not Path(path).is_file():
        return None
    try:
        return "auraflow" if is_auraflow_file(tensor_file(path)) else None
    except (WeightsError, ValueError, OSError):
        return None


def load_auraflow_file(path: str | os.PathLike[str], *, dtype: Any = None,
                       config: Mapping[str, Any] | None = None) -> ComponentWeights:
    """Lazy AuraFlowTransformer2DModel weights of a .safetensors or .gguf file, `.config`
    from the shapes over `config`. `dtype`: None (as stored, bf16 as float32), "float16" or
    "float32". WeightsError in one line for a file of something else. diffusers:
    `AuraFlowTransformer2DModel.from_single_file(path)`."""
    file = tensor_file(path)
    if not is_auraflow_file(file):
        raise WeightsError(f"{file.path}: no {_MARKERS[0]} and {_MARKERS[1]} tensors: not an "
                           "AuraFlow transformer file")
    prefix = prefix_of(file, "cond_seq_linear.")
    names = dict(_TOP)
    doubles, singles = (block_count(file, prefix, kind) for kind in ("double_layers.",
                                                                      "single_layers."))
    for i in range(doubles):
        names.update({f"double_layers.{i}.{k}": f"joint_transformer_blocks.{i}.{v}"
                      for k, v in _DOUBLE.items()})
    for i in range(singles):
        names.update({f"single_layers.{i}.{k}": f"single_transformer_blocks.{i}.{v}"
                      for k, v in _SINGLE.items()})
    refs = {}
    for source, target in names.items():
        name = key_of(file, prefix, source, _WHAT)
        refs[target] = TensorRef(file, name, tuple(file.shape(name)))
    dim, patch_width = refs["pos_embed.proj.weight"].shape
    base = {"attention_head_dim": 256, "in_channels": 4, **dict(config or {})}
    channels = base["in_channels"]
    derived = {
        "_class_name": "AuraFlowTransformer2DModel", "num_mmdit_layers": doubles,
        "num_single_dit_layers": singles, "caption_projection_dim": dim,
        "num_attention_heads": dim // base["attention_head_dim"],
        "patch_size": round((patch_width // channels) ** 0.5),
        "joint_attention_dim": refs["context_embedder.weight"].shape[1],
        "out_channels": refs["proj_out.weight"].shape[0] * channels // patch_width,
        "pos_embed_max_size": refs["pos_embed.pos_embed"].shape[1]}
    return SwappedHalvesWeights("transformer", {**base, **derived}, refs,
                                swapped={"norm_out.linear.weight"}, dtype=resolve_dtype(dtype))
