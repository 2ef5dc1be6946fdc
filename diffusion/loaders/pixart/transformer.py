"""PixArt transformers in the original layout (the PixArt-α / PixArt-Σ repositories' single
files: a `.pth` checkpoint, its `state_dict` read without running its pickle, or a
`.safetensors`, bare or under `model.diffusion_model.`), read lazily under diffusers'
PixArtTransformer2DModel names.

The mapping is diffusers' scripts/convert_pixart_alpha_to_diffusers.py (and Σ's):
`x_embedder.proj` is `pos_embed.proj`; `t_embedder.mlp.0/2` the timestep MLP
(`adaln_single.emb.timestep_embedder.linear_1/2`), `t_block.1` `adaln_single.linear`;
α 1024's `csize_embedder` / `ar_embedder` `mlp.0/2` its resolution / aspect-ratio MLPs;
`y_embedder.y_proj.fc1/fc2` `caption_projection.linear_1/2`; each `blocks.N` is
`transformer_blocks.N`: its fused `attn.qkv` split by rows into attn1's to_q, to_k, to_v,
`attn.proj` attn1's `to_out.0`, `cross_attn.q_linear` attn2's to_q, its fused `kv_linear`
split into to_k and to_v, `cross_attn.proj` attn2's `to_out.0`, `mlp.fc1/fc2`
`ff.net.0.proj` / `ff.net.2`; `final_layer.linear` is `proj_out` and
`final_layer.scale_shift_table` `scale_shift_table`. The unused `pos_embed` (recomputed from
the grid) and `y_embedder.y_embedding` (the training's empty caption) are dropped.

Widths, depth, channels and the size embeddings come from the shapes (heads 72 wide, as
every PixArt XL's); the picture size and the position table's scale are not in the file:
they are `config`'s (the base folder's transformer/config.json), else PixArt 1024's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import PICKLE_SUFFIXES, WeightsError
from ..formats.gguf_file import tensor_file
from ..formats.torch_file import open_weights_file
from ..keymaps.dit_keys import block_count, key_of, prefix_of, split_rows
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype

__all__ = ["is_pixart_file", "load_pixart_transformer", "pixart_file_family"]

_MARKERS = ("blocks.0.cross_attn.q_linear.weight", "blocks.0.cross_attn.kv_linear.weight",
            "blocks.0.mlp.fc1.weight", "t_block.1.weight")
_DROPPED = ("pos_embed", "y_embedder.y_embedding")
_HEADS = (("x_embedder.proj.", "pos_embed.proj."),
          ("t_embedder.mlp.0.", "adaln_single.emb.timestep_embedder.linear_1."),
          ("t_embedder.mlp.2.", "adaln_single.emb.timestep_embedder.linear_2."),
          ("csize_embedder.mlp.0.", "adaln_single.emb.resolution_embedder.linear_1."),
          ("csize_embedder.mlp.2.", "adaln_single.emb.resolution_embedder.linear_2."),
          ("ar_embedder.mlp.0.", "adaln_single.emb.aspect_ratio_embedder.linear_1."),
          ("ar_embedder.mlp.2.", "adaln_single.emb.aspect_ratio_embedder.linear_2."),
          ("t_block.1.", "adaln_single.linear."),
          ("y_embedder.y_proj.fc1.", "caption_projection.linear_1."),
          ("y_embedder.y_proj.fc2.", "caption_projection.linear_2."),
          ("final_layer.linear.", "proj_out."),
          ("final_layer.scale_shift_table", "scale_shift_table"))
_PARTS = ((".attn.proj.", ".attn1.to_out.0."), (".cross_attn.q_linear.", ".attn2.to_q."),
          (".cross_attn.proj.", ".attn2.to_out.0."), (".mlp.fc1.", ".ff.net.0.proj."),
          (".mlp.fc2.", ".ff.net.2."))
# PixArt-Sigma-XL-2-1024-MS's transformer/config.json, for what the shapes do not say
_PIXART = {"_class_name": "PixArtTransformer2DModel", "sample_size": 128,
           "interpolation_scale": None, "norm_eps": 1e-6, "norm_elementwise_affine": False,
           "norm_type": "ada_norm_single", "activation_fn": "gelu-approximate",
           "attention_bias": True}
_HEAD_DIM = 72


def is_pixart_file(file: TensorFile) -> bool:
    """The file holds a PixArt transformer in the original layout (bare or under
    model.diffusion_model.): cross_attn.q_linear / kv_linear, mlp.fc1 and t_block.1."""
    prefix = prefix_of(file, "blocks.")
    return all(prefix + marker in file for marker in _MARKERS)


def _open(path: Path) -> TensorFile:
    return open_weights_file(path) if path.suffix.lower() in PICKLE_SUFFIXES \
        else tensor_file(path)


def pixart_file_family(path: str | os.PathLike[str]) -> str | None:
    """"pixart-sigma" for a .safetensors or PyTorch file holding a PixArt transformer (α or
    Σ: its --base folder says which), None otherwise (a broken file is left for loading to
    name). Reads the header (the pickle) only."""
    path = Path(path)
    if path.suffix.lower() not in (".safetensors", *PICKLE_SUFFIXES) or not path.is_file():
        return None
    try:
        return "pixart-sigma" if is_pixart_file(_open(path)) else None
    except (WeightsError, ValueError, OSError):
        return None


def _target(key: str) -> str:
    for old, new in _HEADS:
        if key.startswith(old):
            return new + key[len(old):]
    if key.startswith("blocks."):
        key = "transformer_blocks." + key[len("blocks."):]
        for old, new in _PARTS:
            key = key.replace(old, new)
    return key


def _config(file: TensorFile, prefix: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The file's config: widths, depth, channels and the size embeddings from the shapes,
    the heads 72 wide unless `config` says otherwise; the rest `config`'s, else PixArt
    1024's."""
    dim, channels, patch, _ = file.shape(key_of(file, prefix, "x_embedder.proj.weight",
                                                "PixArt"))
    out = file.shape(key_of(file, prefix, "final_layer.linear.weight", "PixArt"))[0]
    head_dim = int(config.get("attention_head_dim", _HEAD_DIM))
    if dim % head_dim:
        raise WeightsError(f"{file.path}: a PixArt transformer {dim} wide does not split into "
                           f"heads of {head_dim}; pass its transformer/config.json")
    derived = {
        "in_channels": channels, "out_channels": out // (patch * patch), "patch_size": patch,
        "num_attention_heads": dim // head_dim, "attention_head_dim": head_dim,
        "num_layers": block_count(file, prefix, "blocks."), "cross_attention_dim": dim,
        "caption_channels": file.shape(key_of(file, prefix, "y_embedder.y_proj.fc1.weight",
                                              "PixArt"))[1],
        "use_additional_conditions": prefix + "csize_embedder.mlp.0.weight" in file,
    }
    return {**_PIXART, **dict(config), **derived}


def load_pixart_transformer(path: str | os.PathLike[str], *, dtype: Any = None,
                            config: Mapping[str, Any] | None = None) -> ComponentWeights:
    """Lazy PixArtTransformer2DModel weights (diffusers' names) with `.config` from an
    original-layout .pth / .safetensors file (its config from the shapes, `config` (a
    folder's transformer/config.json) laid under them). `dtype`: None (as stored, bf16 as
    float32), "float16" or "float32". WeightsError naming the file that is missing or not
    a PixArt transformer."""
    file = _open(Path(path))
    if not is_pixart_file(file):
        raise WeightsError(f"{file.path}: no blocks.0.cross_attn.q_linear.weight, "
                           "cross_attn.kv_linear.weight, mlp.fc1.weight and t_block.1.weight "
                           "tensors: not a PixArt transformer file")
    prefix = prefix_of(file, "blocks.")
    merged = _config(file, prefix, config or {})
    dim = merged["cross_attention_dim"]
    refs: dict[str, TensorRef] = {}
    for name in file.keys():
        key = name[len(prefix):]
        if not name.startswith(prefix) or key.startswith(_DROPPED):
            continue
        stem, _, kind = key.rpartition(".")
        if stem.endswith((".attn.qkv", ".cross_attn.kv_linear")):
            block = _target(stem.rsplit(".", 2)[0])
            fused = stem.endswith(".qkv")
            parts = ("to_q", "to_k", "to_v") if fused else ("to_k", "to_v")
            sub = "attn1" if fused else "attn2"
            refs.update(split_rows(file, name, tuple(f"{block}.{sub}.{p}.{kind}" for p in parts),
                                   (dim,) * len(parts)))
        else:
            refs[_target(key)] = TensorRef(file, name, file.shape(name))
    return ComponentWeights("transformer", merged, refs, dtype=resolve_dtype(dtype))
