"""FLUX.2 transformers in one file, in Black Forest Labs' layout: what ComfyUI loads
(klein's `flux-2-klein-4b.safetensors`, `flux-2-klein-9b-fp8.safetensors`; dev's
`flux2-dev.safetensors`, `flux2_dev_fp8mixed.safetensors`; bare or under
`model.diffusion_model.`; bf16, and fp8 or ComfyUI's scaled fp8 read as its float values) and
the GGUFs converted from it (city96's `flux2-dev-Q4_K_M.gguf`: the same names; a `GGUFFile`
reads like a safetensors file, its quantized matrices kept quantized by
`load_component(slices=True)`), read lazily under diffusers' Flux2Transformer2DModel names.

The mapping is diffusers' `convert_flux2_transformer_checkpoint_to_diffusers`
(loaders/single_file_utils.py): `img_in` / `txt_in` are `x_embedder` / `context_embedder`,
`time_in.in_layer` / `out_layer` the timestep embedder's `linear_1` / `linear_2` (FLUX.2
dev's `guidance_in` the guidance embedder's: its file is told from klein's by it), each
`*_modulation.lin` a `.linear`, `final_layer.linear` is `proj_out` and
`final_layer.adaLN_modulation.1` is `norm_out.linear` with its (shift, scale) halves swapped;
a double block's fused `img_attn.qkv` / `txt_attn.qkv` are split by rows into to_q/k/v and
add_q/k/v_proj, its norms' `.scale` are `.weight`s; a single block's `linear1` / `linear2`
are `attn.to_qkv_mlp_proj` / `attn.to_out`. The widths and depths come from the tensor
shapes; the rotary settings are FLUX.2's unless `config` gives them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.gguf_file import tensor_file
from ..keymaps.dit_keys import SwappedHalvesWeights, block_count, key_of, prefix_of, split_rows
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype

__all__ = ["DEV_MARKER", "FLUX2_MARKER", "flux2_file_family", "is_flux2_file", "load_flux2_file"]

FLUX2_MARKER = "single_stream_modulation.lin.weight"  # diffusers' CHECKPOINT_KEY_NAMES
DEV_MARKER = "guidance_in.in_layer.weight"  # FLUX.2 dev embeds its guidance scale
_TOP = {"img_in.": "x_embedder.", "txt_in.": "context_embedder.",
        "time_in.in_layer.": "time_guidance_embed.timestep_embedder.linear_1.",
        "time_in.out_layer.": "time_guidance_embed.timestep_embedder.linear_2.",
        "guidance_in.in_layer.": "time_guidance_embed.guidance_embedder.linear_1.",
        "guidance_in.out_layer.": "time_guidance_embed.guidance_embedder.linear_2.",
        "double_stream_modulation_img.lin.": "double_stream_modulation_img.linear.",
        "double_stream_modulation_txt.lin.": "double_stream_modulation_txt.linear.",
        "single_stream_modulation.lin.": "single_stream_modulation.linear.",
        "final_layer.linear.": "proj_out.",
        "final_layer.adaLN_modulation.1.": "norm_out.linear."}
_DOUBLE = {"img_attn.norm.query_norm": "attn.norm_q", "img_attn.norm.key_norm": "attn.norm_k",
           "img_attn.proj": "attn.to_out.0", "img_mlp.0": "ff.linear_in",
           "img_mlp.2": "ff.linear_out", "txt_attn.norm.query_norm": "attn.norm_added_q",
           "txt_attn.norm.key_norm": "attn.norm_added_k", "txt_attn.proj": "attn.to_add_out",
           "txt_mlp.0": "ff_context.linear_in", "txt_mlp.2": "ff_context.linear_out"}
_SINGLE = {"linear1": "attn.to_qkv_mlp_proj", "linear2": "attn.to_out",
           "norm.query_norm": "attn.norm_q", "norm.key_norm": "attn.norm_k"}
_QKV = {"img_attn": ("attn.to_q", "attn.to_k", "attn.to_v"),
        "txt_attn": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}
_ROPE = {"axes_dims_rope": (32, 32, 32, 32), "rope_theta": 2000, "eps": 1e-6}


def is_flux2_file(file: TensorFile) -> bool:
    """The file holds a FLUX.2 transformer in BFL's layout (bare or under
    model.diffusion_model.)."""
    return prefix_of(file, "double_blocks.") + FLUX2_MARKER in file


def flux2_file_family(path: str | os.PathLike[str]) -> str | None:
    """"flux2-dev" for a .safetensors or .gguf file holding FLUX.2 dev's transformer (its
    guidance embedding), "flux2-klein" for another FLUX.2 transformer, None otherwise (a
    broken file is left for loading to name). Reads the header only."""
    if Path(path).suffix.lower() not in (".safetensors", ".gguf") or not Path(path).is_file():
        return None
    try:
        file = tensor_file(path)
        if not is_flux2_file(file):
            return None
    except (WeightsError, ValueError, OSError):
        return None
    return "flux2-dev" if prefix_of(file, "double_blocks.") + DEV_MARKER in file else (
        "flux2-klein")


def _target(key: str) -> str:
    """diffusers' name of a BFL key (not a fused q/k/v: the caller splits those); an unknown
    key as it is, for the model's key check to name."""
    stem, _, kind = key.rpartition(".")
    kind = "weight" if kind == "scale" else kind
    for old, new in _TOP.items():
        if key.startswith(old):
            return new + key[len(old):]
    group, index, rest = [*stem.split(".", 2), "", ""][:3]
    if group == "double_blocks" and rest in _DOUBLE:
        return f"transformer_blocks.{index}.{_DOUBLE[rest]}.{kind}"
    if group == "single_blocks" and rest in _SINGLE:
        return f"single_transformer_blocks.{index}.{_SINGLE[rest]}.{kind}"
    return key


def load_flux2_file(path: str | os.PathLike[str], *, dtype: Any = None,
                    config: Mapping[str, Any] | None = None) -> ComponentWeights:
    """Lazy Flux2Transformer2DModel weights (diffusers' names) of a BFL-layout .safetensors
    or .gguf file, `.config` read from the shapes over `config` (a folder's
    transformer/config.json) for what shapes do not say. `dtype`: None (as stored, bf16 as
    float32), "float16" or "float32". WeightsError naming the file when it holds no FLUX.2
    transformer. diffusers: `Flux2Transformer2DModel.from_single_file(path)`."""
    file = tensor_file(path)
    if not is_flux2_file(file):
        raise WeightsError(f"{file.path}: no {FLUX2_MARKER} tensor: not a FLUX.2 "
                           "transformer file")
    prefix = prefix_of(file, "double_blocks.")
    dim, in_channels = file.shape(key_of(file, prefix, "img_in.weight", "FLUX.2"))
    head_dim = file.shape(key_of(file, prefix, "double_blocks.0.img_attn.norm.query_norm.scale",
                                 "FLUX.2"))[0]
    derived = {
        "_class_name": "Flux2Transformer2DModel", "patch_size": 1, "in_channels": in_channels,
        "out_channels": file.shape(key_of(file, prefix, "final_layer.linear.weight",
                                          "FLUX.2"))[0],
        "num_layers": block_count(file, prefix, "double_blocks."),
        "num_single_layers": block_count(file, prefix, "single_blocks."),
        "attention_head_dim": head_dim, "num_attention_heads": dim // head_dim,
        "joint_attention_dim": file.shape(key_of(file, prefix, "txt_in.weight", "FLUX.2"))[1],
        "timestep_guidance_channels": file.shape(key_of(file, prefix,
                                                        "time_in.in_layer.weight",
                                                        "FLUX.2"))[1],
        # the SwiGLU's input projection holds gate and up: 2 * mlp_ratio * dim rows
        "mlp_ratio": file.shape(key_of(file, prefix, "double_blocks.0.img_mlp.0.weight",
                                       "FLUX.2"))[0] / (2 * dim),
        "guidance_embeds": prefix + DEV_MARKER in file,
    }
    refs: dict[str, TensorRef] = {}
    for name in file.keys():
        if not name.startswith(prefix):
            continue
        key = name[len(prefix):]
        parts = key.split(".")
        if parts[0] == "double_blocks" and parts[3] == "qkv":
            targets = tuple(f"transformer_blocks.{parts[1]}.{t}.{parts[-1]}"
                            for t in _QKV[parts[2]])
            refs.update(split_rows(file, name, targets, (dim,) * 3))
        else:
            refs[_target(key)] = TensorRef(file, name, tuple(file.shape(name)))
    merged = {**_ROPE, **dict(config or {}), **derived}
    return SwappedHalvesWeights("transformer", merged, refs, swapped={"norm_out.linear.weight"},
                                dtype=resolve_dtype(dtype))
