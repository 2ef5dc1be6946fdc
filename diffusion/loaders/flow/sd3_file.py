"""Stability's single-file SD3 / SD3.5 MMDiT (`sd3.5_large.safetensors`,
`sd3.5_medium.safetensors`, `sd3_medium.safetensors`: `joint_blocks.N.x_block.*` under
`model.diffusion_model.`) to diffusers' SD3Transformer2DModel names, read lazily.

The mapping is diffusers' `convert_sd3_transformer_checkpoint_to_diffusers`: fused q/k/v
split by rows, `ln_q`/`ln_k` to the QK-norms, the last block's text adaLN and the final
adaLN read with their (shift, scale) halves swapped. The config comes from the shapes. The
text encoders some of these files also carry (`text_encoders.*`) are not read here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.safetensors import SafetensorsFile
from ..keymaps.dit_keys import (
    PREFIX,
    SwappedHalvesWeights,
    block_count,
    key_of,
    prefix_of,
    split_rows,
)
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype

__all__ = ["is_sd3_file", "load_sd3_file", "sd3_file_config"]

_RENAMES = {  # SAI -> diffusers, outside the blocks
    "x_embedder.proj": "pos_embed.proj", "t_embedder.mlp.0":
    "time_text_embed.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "time_text_embed.timestep_embedder.linear_2",
    "y_embedder.mlp.0": "time_text_embed.text_embedder.linear_1",
    "y_embedder.mlp.2": "time_text_embed.text_embedder.linear_2",
    "context_embedder": "context_embedder", "final_layer.linear": "proj_out",
    "final_layer.adaLN_modulation.1": "norm_out.linear",
}
_BLOCK = {  # joint_blocks.N.<SAI> -> transformer_blocks.N.<diffusers>; (x)/(context) sides
    "x_block.attn.proj": "attn.to_out.0", "x_block.attn2.proj": "attn2.to_out.0",
    "x_block.adaLN_modulation.1": "norm1.linear", "x_block.mlp.fc1": "ff.net.0.proj",
    "x_block.mlp.fc2": "ff.net.2", "context_block.attn.proj": "attn.to_add_out",
    "context_block.adaLN_modulation.1": "norm1_context.linear",
    "context_block.mlp.fc1": "ff_context.net.0.proj", "context_block.mlp.fc2": "ff_context.net.2",
}
_NORMS = {"x_block.attn.ln_q": "attn.norm_q", "x_block.attn.ln_k": "attn.norm_k",
          "context_block.attn.ln_q": "attn.norm_added_q",
          "context_block.attn.ln_k": "attn.norm_added_k",
          "x_block.attn2.ln_q": "attn2.norm_q", "x_block.attn2.ln_k": "attn2.norm_k"}
_QKV = {"x_block.attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
        "context_block.attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
        "x_block.attn2.qkv": ("attn2.to_q", "attn2.to_k", "attn2.to_v")}
_SD3_HEAD_DIM = 64  # every SD3/3.5 model's; only QK-norm weights would tell otherwise


def is_sd3_file(file: TensorFile) -> bool:
    """The file holds an SD3-layout MMDiT (bare or under model.diffusion_model.)."""
    return any(key.removeprefix(PREFIX).startswith("joint_blocks.") for key in file.keys())


def sd3_file_config(file: TensorFile) -> dict[str, Any]:
    """SD3Transformer2DModel's config of a Stability-layout file (a SafetensorsFile, or a
    GGUFFile: city96's), read from the header's shapes alone: widths, depth, patch and
    position-table size, QK-norm, dual attention blocks. WeightsError naming the file when it
    is no SD3 transformer or lacks a tensor."""
    if not is_sd3_file(file):
        raise WeightsError(f"{file.path}: no joint_blocks.* tensors: not an SD3 transformer "
                           "file")
    prefix = prefix_of(file, "joint_blocks.")

    def key(name: str) -> str:
        return key_of(file, prefix, name, "SD3")

    layers = block_count(file, prefix, "joint_blocks.")
    dim, in_channels, patch, _ = file.shape(key("x_embedder.proj.weight"))
    qk_norm = prefix + "joint_blocks.0.x_block.attn.ln_q.weight" in file
    head_dim = file.shape(key("joint_blocks.0.x_block.attn.ln_q.weight"))[0] if qk_norm \
        else _SD3_HEAD_DIM
    caption_dim, joint_dim = file.shape(key("context_embedder.weight"))
    return {
        "_class_name": "SD3Transformer2DModel", "sample_size": 128, "patch_size": patch,
        "in_channels": in_channels, "num_layers": layers, "attention_head_dim": head_dim,
        "num_attention_heads": dim // head_dim, "joint_attention_dim": joint_dim,
        "caption_projection_dim": caption_dim,
        "pooled_projection_dim": file.shape(key("y_embedder.mlp.0.weight"))[1],
        "out_channels": file.shape(key("final_layer.linear.weight"))[0] // patch ** 2,
        "pos_embed_max_size": math.isqrt(file.shape(key("pos_embed"))[1]),
        "dual_attention_layers": tuple(
            i for i in range(layers)
            if prefix + f"joint_blocks.{i}.x_block.attn2.qkv.weight" in file),
        "qk_norm": "rms_norm" if qk_norm else None,
    }


def load_sd3_file(path: str | Path | SafetensorsFile, *, dtype: Any = None,
                  config: Mapping[str, Any] | None = None) -> ComponentWeights:
    """Lazy SD3Transformer2DModel weights (diffusers' names) of a Stability single file, with
    `.config` from the shapes (`sd3_file_config`); `config` overrides any of it. `dtype`: None
    (as stored, bf16 as float32), "float16" or "float32". diffusers:
    `SD3Transformer2DModel.from_single_file`."""
    # an open file: a SafetensorsFile, or a GGUFFile (diffusion.loaders.flow.gguf)
    file = SafetensorsFile(path) if isinstance(path, (str, Path)) else path
    derived = sd3_file_config(file)
    prefix = prefix_of(file, "joint_blocks.")

    def key(name: str) -> str:
        return key_of(file, prefix, name, "SD3")

    layers, dual = derived["num_layers"], derived["dual_attention_layers"]
    dim = file.shape(key("x_embedder.proj.weight"))[0]
    qk_norm = derived["qk_norm"] is not None
    refs: dict[str, TensorRef] = {"pos_embed.pos_embed": TensorRef(
        file, key("pos_embed"), file.shape(key("pos_embed")))}
    swapped = set()
    for parameter in ("weight", "bias"):
        for source, target in _RENAMES.items():
            name = key(f"{source}.{parameter}")
            refs[f"{target}.{parameter}"] = TensorRef(file, name, file.shape(name))
        swapped.add(f"norm_out.linear.{parameter}")
        for i in range(layers):
            last = i == layers - 1
            for source, target in _BLOCK.items():
                if (last and source.startswith("context_block")
                        and not source.startswith("context_block.adaLN")):
                    continue  # the last block ends the text stream: no projection, no MLP
                if source.startswith("x_block.attn2") and i not in dual:
                    continue
                name = key(f"joint_blocks.{i}.{source}.{parameter}")
                refs[f"transformer_blocks.{i}.{target}.{parameter}"] = TensorRef(
                    file, name, file.shape(name))
            if last:
                swapped.add(f"transformer_blocks.{i}.norm1_context.linear.{parameter}")
            for source, targets in _QKV.items():
                if source.startswith("x_block.attn2") and i not in dual:
                    continue
                refs.update(split_rows(file, key(f"joint_blocks.{i}.{source}.{parameter}"),
                                       tuple(f"transformer_blocks.{i}.{t}.{parameter}"
                                             for t in targets), (dim,) * 3))
    for i in range(layers):
        for source, target in _NORMS.items() if qk_norm else ():
            if source.startswith("x_block.attn2") and i not in dual:
                continue
            name = key(f"joint_blocks.{i}.{source}.weight")
            refs[f"transformer_blocks.{i}.{target}.weight"] = TensorRef(file, name,
                                                                        file.shape(name))
    return SwappedHalvesWeights("transformer", {**derived, **(config or {})}, refs,
                                swapped=swapped, dtype=resolve_dtype(dtype))
