"""Sana transformers (SanaTransformer2DModel), read lazily under diffusers' names: a diffusers
`transformer/` folder (config.json and diffusion_pytorch_model safetensors, sharded or not),
or one file in the original layout (NVIDIA's Sana repository): a `.pth` checkpoint (its
`state_dict`, read without running its pickle) or a `.safetensors`, bare or under
`model.diffusion_model.` beside a checkpoint's other parts, which are not read.

The file mapping is diffusers' scripts/convert_sana_to_diffusers.py (and, for Sana 1.0,
loaders/single_file_utils.py's convert_sana_transformer_to_diffusers): `x_embedder.proj` is
`patch_embed.proj`; `t_embedder.mlp.0/2` the timestep MLP (`time_embed.emb.timestep_embedder`,
Sprint's `time_embed.timestep_embedder`), `cfg_embedder.mlp.0/2` Sprint's guidance MLP,
`t_block.1` `time_embed.linear`; `y_embedder.y_proj.fc1/fc2` `caption_projection.linear_1/2`,
`attention_y_norm` `caption_norm`; each `blocks.N` is `transformer_blocks.N`: its fused
`attn.qkv` split by rows into attn1's to_q, to_k, to_v, `attn.proj` attn1's `to_out.0`,
`cross_attn.q_linear` attn2's to_q, its fused `kv_linear` split into to_k and to_v,
`cross_attn.proj` attn2's `to_out.0`, the q/k norms (Sana 1.5, Sprint) `norm_q` / `norm_k`,
`mlp.inverted_conv/depth_conv/point_conv.conv` `ff.conv_inverted/conv_depth/conv_point`;
`final_layer.linear` is `proj_out` and `final_layer.scale_shift_table` `scale_shift_table`.
The unused `pos_embed` (recomputed from the grid), `y_embedder.y_embedding` (the training's
empty caption) and `logvar_linear` are dropped.

Widths, depth, q/k norms and guidance come from the shapes; the self-attention's heads are 32
wide (every Sana's), the cross-attention's heads come from the width (Sana's 2240 wide models
have 20, the 1152 wide ones 16); the picture size and the
position embeddings (Sana 2K's and 4K's `interpolation_scale`) are not in the file: they are
Sana 1024px's unless `config` (the model's transformer/config.json) gives them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import PICKLE_SUFFIXES, WeightsError
from ..formats.diffusers_folder import read_json, weight_refs
from ..formats.gguf_file import tensor_file
from ..formats.torch_file import open_weights_file
from ..keymaps.dit_keys import block_count, key_of, prefix_of, split_rows
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype

__all__ = ["is_sana_file", "load_sana_transformer", "sana_file_family"]

_MARKERS = ("blocks.0.cross_attn.q_linear.weight", "blocks.0.cross_attn.kv_linear.weight",
            "blocks.0.mlp.depth_conv.conv.weight")
_DROPPED = ("pos_embed", "y_embedder.y_embedding", "logvar_linear.")
# whole-name prefixes (the timestep MLP's target depends on the guidance embedding's presence)
_HEADS = (("x_embedder.proj.", "patch_embed.proj."),
          ("cfg_embedder.mlp.0.", "time_embed.guidance_embedder.linear_1."),
          ("cfg_embedder.mlp.2.", "time_embed.guidance_embedder.linear_2."),
          ("t_block.1.", "time_embed.linear."),
          ("y_embedder.y_proj.fc1.", "caption_projection.linear_1."),
          ("y_embedder.y_proj.fc2.", "caption_projection.linear_2."),
          ("attention_y_norm.", "caption_norm."), ("final_layer.linear.", "proj_out."),
          ("final_layer.scale_shift_table", "scale_shift_table"))
_PARTS = ((".attn.proj.", ".attn1.to_out.0."), (".attn.q_norm.", ".attn1.norm_q."),
          (".attn.k_norm.", ".attn1.norm_k."), (".cross_attn.q_linear.", ".attn2.to_q."),
          (".cross_attn.proj.", ".attn2.to_out.0."), (".cross_attn.q_norm.", ".attn2.norm_q."),
          (".cross_attn.k_norm.", ".attn2.norm_k."),
          (".mlp.inverted_conv.conv.", ".ff.conv_inverted."),
          (".mlp.depth_conv.conv.", ".ff.conv_depth."),
          (".mlp.point_conv.conv.", ".ff.conv_point."))
# Sana_1600M_1024px_diffusers' transformer/config.json, for what the shapes do not say
_SANA = {"_class_name": "SanaTransformer2DModel", "sample_size": 32, "norm_eps": 1e-6,
         "norm_elementwise_affine": False, "interpolation_scale": None,
         "guidance_embeds_scale": 0.1, "timestep_scale": 1.0}
_CROSS_HEADS = {2240: 20, 1152: 16}  # the original models' num_heads by width
_HEAD_DIM = 32  # Sana's linear attention's heads, in every size


def is_sana_file(file: TensorFile) -> bool:
    """The file holds a Sana transformer in the original layout (bare or under
    model.diffusion_model.): cross_attn.q_linear / kv_linear and a depthwise mlp conv."""
    prefix = prefix_of(file, "blocks.")
    return all(prefix + marker in file for marker in _MARKERS)


def _open(path: Path) -> TensorFile:
    return open_weights_file(path) if path.suffix.lower() in PICKLE_SUFFIXES \
        else tensor_file(path)


def sana_file_family(path: str | os.PathLike[str]) -> str | None:
    """"sana" for a .safetensors or PyTorch file holding a Sana transformer, None otherwise
    (a broken file is left for loading to name). Reads the header (the pickle) only."""
    path = Path(path)
    suffixes = (".safetensors", *PICKLE_SUFFIXES)
    if path.suffix.lower() not in suffixes or not path.is_file():
        return None
    try:
        return "sana" if is_sana_file(_open(path)) else None
    except (WeightsError, ValueError, OSError):
        return None


def _target(key: str, guidance: bool) -> str:
    timestep = "time_embed.timestep_embedder." if guidance \
        else "time_embed.emb.timestep_embedder."
    for old, new in (*_HEADS, ("t_embedder.mlp.0.", timestep + "linear_1."),
                     ("t_embedder.mlp.2.", timestep + "linear_2.")):
        if key.startswith(old):
            return new + key[len(old):]
    if key.startswith("blocks."):
        key = "transformer_blocks." + key[len("blocks."):]
        for old, new in _PARTS:
            key = key.replace(old, new)
    return key


def _config(file: TensorFile, prefix: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The file's config: widths, depth, q/k norms and guidance from the shapes; the heads
    (32 wide; the cross-attention's by the width) unless `config` gives them; the rest
    `config`'s, else Sana 1024px's."""
    dim, channels, patch, _ = file.shape(key_of(file, prefix, "x_embedder.proj.weight", "Sana"))
    out = file.shape(key_of(file, prefix, "final_layer.linear.weight", "Sana"))[0]
    inner = file.shape(key_of(file, prefix, "blocks.0.mlp.inverted_conv.conv.weight",
                              "Sana"))[0] // 2
    heads = config.get("num_cross_attention_heads", _CROSS_HEADS.get(dim))
    head_dim = config.get("attention_head_dim", _HEAD_DIM)
    if heads is None:
        raise WeightsError(f"{file.path}: a Sana transformer {dim} wide, whose "
                           "cross-attention heads are not known; pass the model's "
                           "transformer/config.json")
    cross = file.shape(key_of(file, prefix, "blocks.0.cross_attn.q_linear.weight", "Sana"))[0]
    if dim % head_dim or cross % heads or int(inner / dim * dim) != inner:
        raise WeightsError(f"{file.path}: widths {dim} (model), {inner} (feed-forward) do "
                           "not make a Sana transformer; pass its transformer/config.json")
    derived = {
        "in_channels": channels, "out_channels": out // (patch * patch), "patch_size": patch,
        "num_attention_heads": dim // head_dim, "attention_head_dim": head_dim,
        "num_layers": block_count(file, prefix, "blocks."), "num_cross_attention_heads": heads,
        "cross_attention_head_dim": cross // heads, "cross_attention_dim": dim,
        "caption_channels": file.shape(key_of(file, prefix, "y_embedder.y_proj.fc1.weight",
                                              "Sana"))[1],
        "mlp_ratio": inner / dim, "attention_bias": prefix + "blocks.0.attn.qkv.bias" in file,
        "qk_norm": ("rms_norm_across_heads" if prefix + "blocks.0.attn.q_norm.weight" in file
                    else None),
        "guidance_embeds": prefix + "cfg_embedder.mlp.0.weight" in file,
    }
    return {**_SANA, **dict(config), **derived}


def load_sana_transformer(path: str | os.PathLike[str], *, dtype: Any = None,
                          variant: str | None = None,
                          config: Mapping[str, Any] | None = None) -> ComponentWeights:
    """Lazy SanaTransformer2DModel weights (diffusers' names) with `.config`, from a diffusers
    transformer folder or an original-layout .pth / .safetensors file (its config from the
    shapes, `config` (a folder's transformer/config.json) laid under them). `dtype`: None (as
    stored, bf16 as float32), "float16" or "float32"; `variant`: a folder's e.g. "fp16".
    WeightsError naming the file or folder that is missing or not a Sana transformer.
    diffusers: `SanaTransformer2DModel.from_pretrained(folder)` / `.from_single_file(path)`."""
    root = Path(path)
    if root.is_dir():
        folder_config = read_json(root / "config.json")
        name = folder_config.get("_class_name", "SanaTransformer2DModel")
        if name != "SanaTransformer2DModel":
            raise WeightsError(f"{root / 'config.json'}: a {name}, not a "
                               "SanaTransformer2DModel")
        found, _where = weight_refs(root, "diffusion_pytorch_model", variant)
        return ComponentWeights("transformer", folder_config, found, dtype=resolve_dtype(dtype))
    file = _open(root)
    if not is_sana_file(file):
        raise WeightsError(f"{file.path}: no blocks.0.cross_attn.q_linear.weight, "
                           "cross_attn.kv_linear.weight and mlp.depth_conv.conv.weight "
                           "tensors: not a Sana transformer file")
    prefix = prefix_of(file, "blocks.")
    merged = _config(file, prefix, config or {})
    dim, guidance = merged["cross_attention_dim"], merged["guidance_embeds"]
    cross = merged["num_cross_attention_heads"] * merged["cross_attention_head_dim"]
    refs: dict[str, TensorRef] = {}
    for name in file.keys():
        key = name[len(prefix):]
        if not name.startswith(prefix) or key.startswith(_DROPPED):
            continue
        stem, _, kind = key.rpartition(".")
        if stem.endswith((".attn.qkv", ".cross_attn.kv_linear")):
            attn = _target(stem.rsplit(".", 2)[0], guidance)
            fused = stem.endswith(".qkv")
            parts = ("to_q", "to_k", "to_v") if fused else ("to_k", "to_v")
            sub = "attn1" if fused else "attn2"
            refs.update(split_rows(file, name, tuple(f"{attn}.{sub}.{p}.{kind}" for p in parts),
                                   (dim,) * 3 if fused else (cross,) * 2))
        else:
            refs[_target(key, guidance)] = TensorRef(file, name, file.shape(name))
    return ComponentWeights("transformer", merged, refs, dtype=resolve_dtype(dtype))
