"""HunyuanVideo (1.0) transformers: a diffusers folder's `transformer/` (config.json and
diffusion_pytorch_model*.safetensors, one file or sharded, read as stored), or Tencent's
original single file read lazily under diffusers' HunyuanVideoTransformer3DModel names: the
release's `hunyuan-video-t2v-720p/transformers/mp_rank_00_model_states.pt` (its tensors
under `module`), or a .safetensors file in that layout, bare or under ComfyUI's
`model.diffusion_model.` (ComfyUI's repackaged `hunyuan_video_t2v_720p_bf16.safetensors`).

The original's mapping is diffusers' scripts/convert_hunyuan_video_to_diffusers.py: what
HunyuanImage 2.1's shares (keymaps/hunyuan_keys: the refiner's fused `self_attn_qkv` split by
rows, the blocks' fused q/k/v and single blocks' `linear1` split by rows, the final adaLN's
(shift, scale) halves swapped into diffusers' (scale, shift)), plus the guidance embedding
(`guidance_in.`) and the pooled CLIP projection (`vector_in.`), both in `time_text_embed`.
The config comes from the tensor shapes; the rotary axes are the release's 16 + 56 + 56 of
its 128-wide heads, or `config`'s (fields a file cannot tell, over those read).

    weights = load_hunyuan_video_transformer("HunyuanVideo/transformer")
    weights = load_hunyuan_video_transformer("hunyuan_video_t2v_720p_bf16.safetensors")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import PICKLE_SUFFIXES, WeightsError
from ..formats.diffusers_folder import read_json, weight_refs
from ..formats.torch_file import open_weights_file
from ..keymaps.dit_keys import SwappedHalvesWeights, block_count, key_of, prefix_of
from ..keymaps.hunyuan_keys import (
    FINAL_ADALN,
    OPTIONAL,
    RENAMES,
    double_refs,
    refiner_refs,
    renamed_refs,
    single_refs,
)
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype

__all__ = ["is_hunyuan_video_file", "load_hunyuan_video_transformer"]

_WHAT = "HunyuanVideo"
_CLASS = "HunyuanVideoTransformer3DModel"
_MARKERS = ("vector_in.in_layer.weight", "txt_in.individual_token_refiner.blocks.0.norm1.weight")
_RENAMES = {**RENAMES,
            "guidance_in.mlp.0": "{time}.guidance_embedder.linear_1",
            "guidance_in.mlp.2": "{time}.guidance_embedder.linear_2",
            "vector_in.in_layer": "{time}.text_embedder.linear_1",
            "vector_in.out_layer": "{time}.text_embedder.linear_2"}
_RELEASE_ROPE = {128: (16, 56, 56)}  # head dim -> the release's rotary axes


def is_hunyuan_video_file(file: TensorFile) -> bool:
    """The file holds a HunyuanVideo (1.0) transformer in Tencent's layout (bare or under
    model.diffusion_model.): the text refiner and the pooled CLIP projection `vector_in`,
    which neither HunyuanImage 2.1 nor HunyuanVideo 1.5 has."""
    prefix = prefix_of(file, "txt_in.")
    return all(prefix + marker in file for marker in _MARKERS)


def _original_config(file: TensorFile, prefix: str, path: Path, given: dict[str, Any]
                     ) -> dict[str, Any]:
    """HunyuanVideoTransformer3DModel's config read from the shapes, `given`'s fields over
    them."""
    def shape(key: str) -> tuple[int, ...]:
        return tuple(file.shape(key_of(file, prefix, key, _WHAT)))

    dim, in_channels, patch_t, patch, patch_w = shape("img_in.proj.weight")
    head_dim = shape("double_blocks.0.img_attn_q_norm.weight")[0]
    rope = given.get("rope_axes_dim") or _RELEASE_ROPE.get(head_dim)
    if rope is None:
        raise WeightsError(f"{path}: attention heads {head_dim} wide, not the release's 128, "
                           "and the file does not give their rotary axes; pass "
                           "config={'rope_axes_dim': (frames, rows, columns)}")
    if patch != patch_w:
        raise WeightsError(f"{path}: img_in.proj's patches are {patch} x {patch_w}; "
                           f"{_WHAT} patches are square")
    out_channels = shape("final_layer.linear.weight")[0] // (patch_t * patch * patch)
    return {
        "_class_name": _CLASS, "in_channels": in_channels, "out_channels": out_channels,
        "num_attention_heads": dim // head_dim, "attention_head_dim": head_dim,
        "num_layers": block_count(file, prefix, "double_blocks."),
        "num_single_layers": block_count(file, prefix, "single_blocks."),
        "num_refiner_layers": block_count(file, prefix, "txt_in.individual_token_refiner.blocks."),
        "mlp_ratio": 4.0, "patch_size": patch, "patch_size_t": patch_t, "qk_norm": "rms_norm",
        "guidance_embeds": prefix + "guidance_in.mlp.0.weight" in file,
        "text_embed_dim": shape("txt_in.input_embedder.weight")[1],
        "pooled_projection_dim": shape("vector_in.in_layer.weight")[1], "rope_theta": 256.0,
        "rope_axes_dim": tuple(int(a) for a in rope),
        # image-to-video's image latents and mask ride on the channels (HunyuanVideo-I2V)
        "image_condition_type": "latent_concat" if in_channels > out_channels else None,
    } | {k: v for k, v in given.items() if k != "rope_axes_dim"}


def _load_file(path: Path, dtype: Any, given: dict[str, Any]) -> ComponentWeights:
    file = open_weights_file(path)
    if not is_hunyuan_video_file(file):
        raise WeightsError(f"{path}: no {_MARKERS[0]} and {_MARKERS[1]} tensors: not a "
                           f"{_WHAT} transformer in Tencent's layout")
    prefix = prefix_of(file, "txt_in.")
    config = _original_config(file, prefix, path, given)
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    refs: dict[str, TensorRef] = renamed_refs(file, prefix, _RENAMES, (*OPTIONAL, "guidance_in."),
                                              "time_text_embed", _WHAT)
    refs.update(refiner_refs(file, prefix, dim, config["num_refiner_layers"], _WHAT))
    refs.update(double_refs(file, prefix, dim, config["num_layers"], _WHAT))
    refs.update(single_refs(file, prefix, dim, config["num_single_layers"], _WHAT))
    return SwappedHalvesWeights("transformer", config, refs,
                                swapped={f"{FINAL_ADALN}.weight", f"{FINAL_ADALN}.bias"},
                                dtype=resolve_dtype(dtype))


def load_hunyuan_video_transformer(path: str | os.PathLike[str], *, dtype: Any = None,
                                   variant: str | None = None,
                                   config: dict[str, Any] | None = None) -> ComponentWeights:
    """Lazy HunyuanVideoTransformer3DModel weights (diffusers' names, `.config` diffusers'
    config.json or the original's read from its shapes) of a diffusers `transformer/` folder
    or an original .pt / .safetensors file. `dtype`: None (as stored, bf16 as float32),
    "float16" or "float32"; `variant` (a folder's): e.g. "fp16"; `config` (a file's):
    diffusers config fields it cannot tell (`rope_axes_dim` of heads not 128 wide).
    WeightsError in one line naming the file or folder when it is neither or a part is
    missing. diffusers:
    `HunyuanVideoTransformer3DModel.from_pretrained(folder)` / `.from_single_file(file)`."""
    root = Path(path)
    if not root.exists():
        raise WeightsError(f"{root}: no such file or folder; give a {_WHAT} transformer/ "
                           "folder or its original .pt or .safetensors file")
    if root.is_file():
        if root.suffix.lower() not in PICKLE_SUFFIXES and root.suffix != ".safetensors":
            raise WeightsError(f"{root}: not a .safetensors or .pt file; give a {_WHAT} "
                               "transformer/ folder or its original weights file")
        return _load_file(root, dtype, dict(config or {}))
    stored = read_json(root / "config.json")
    if stored.get("_class_name") != _CLASS:
        raise WeightsError(f"{root / 'config.json'}: _class_name {stored.get('_class_name')!r} "
                           f"is not a {_CLASS}")
    refs, _where = weight_refs(root, "diffusion_pytorch_model", variant)
    return ComponentWeights("transformer", stored, refs, dtype=resolve_dtype(dtype))
