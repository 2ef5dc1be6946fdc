"""Wan transformers in one file, as ComfyUI users download them: the split diffusion model of
Comfy-Org's repackaged Wan 2.1 / 2.2 (`wan2.1_t2v_1.3B_bf16.safetensors`,
`wan2.1_i2v_480p_14B_fp8_e4m3fn.safetensors`, `wan2.2_t2v_high_noise_14B_fp8_scaled
.safetensors`, ...; ComfyUI's scaled fp8 read as its float values), bare or under
`model.diffusion_model.`, and city96's GGUFs of them (`wan2.1-t2v-14b-Q4_K_M.gguf`: the same
names; a `GGUFFile` reads like a safetensors file, its quantized matrices kept quantized by
`load_component`), read lazily.

The files keep Wan's original names (`blocks.N.self_attn.q.weight`, `blocks.N.norm3.weight`,
`time_embedding.0.weight`, `head.head.weight`, ...), renamed to diffusers'
WanTransformer3DModel names as diffusers' `convert_wan_transformer_to_diffusers` does
(`WAN_RENAMES`, applied in order to every key); a file already in diffusers' names is taken
as it is. The widths, depth and channels come from the tensor shapes; the head count from
`config` (a `--base` folder's transformer/config.json) or Wan's 128-wide heads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.gguf_file import tensor_file
from ..keymaps.dit_keys import block_count
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype

__all__ = ["WAN_RENAMES", "is_wan_file", "load_wan_file", "wan_file_family", "wan_name"]

# diffusers' TRANSFORMER_KEYS_RENAME_DICT (single_file_utils), without VACE's, Animate's and
# the face adapter's; norm2 and norm3 trade places (the original's norm3 is the cross-attention
# norm, diffusers' norm2)
WAN_RENAMES = (
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("cross_attn", "attn2"), ("self_attn", "attn1"),
    (".o.", ".to_out.0."), (".q.", ".to_q."), (".k.", ".to_k."), (".v.", ".to_v."),
    (".k_img.", ".add_k_proj."), (".v_img.", ".add_v_proj."),
    (".norm_k_img.", ".norm_added_k."),
    ("head.modulation", "scale_shift_table"), ("head.head", "proj_out"),
    ("modulation", "scale_shift_table"),
    ("ffn.0", "ffn.net.0.proj"), ("ffn.2", "ffn.net.2"),
    ("norm2", "norm__placeholder"), ("norm3", "norm2"), ("norm__placeholder", "norm3"),
    ("img_emb.proj.0", "condition_embedder.image_embedder.norm1"),
    ("img_emb.proj.1", "condition_embedder.image_embedder.ff.net.0.proj"),
    ("img_emb.proj.3", "condition_embedder.image_embedder.ff.net.2"),
    ("img_emb.proj.4", "condition_embedder.image_embedder.norm2"),
)
_PREFIX = "model.diffusion_model."
_ORIGINAL = ("blocks.0.self_attn.q.weight", "head.head.weight", "patch_embedding.weight")
_DIFFUSERS = ("blocks.0.attn1.to_q.weight", "proj_out.weight", "patch_embedding.weight")
_HEAD_DIM = 128  # every Wan's (1.3B: 12 heads of 1536; 5B: 24 of 3072; 14B: 40 of 5120)


def wan_name(key: str) -> str:
    """diffusers' name of the original Wan tensor `key` (WAN_RENAMES in order)."""
    for old, new in WAN_RENAMES:
        key = key.replace(old, new)
    return key


def _layout(file: TensorFile) -> tuple[str, bool] | None:
    """(prefix, original names?) of the Wan transformer in `file`, None when it holds none."""
    for prefix in (_PREFIX, ""):
        for markers, original in ((_ORIGINAL, True), (_DIFFUSERS, False)):
            if all(prefix + marker in file for marker in markers):
                return prefix, original
    return None


def is_wan_file(file: TensorFile) -> bool:
    """The file holds a Wan transformer (original or diffusers names, bare or under
    model.diffusion_model.)."""
    return _layout(file) is not None


def wan_file_family(path: str | os.PathLike[str]) -> str | None:
    """"wan" for a .safetensors or .gguf file holding a Wan transformer, None otherwise (a
    broken file is left for loading to name). Reads the header only."""
    if Path(path).suffix.lower() not in (".safetensors", ".gguf") or not Path(path).is_file():
        return None
    try:
        return "wan" if is_wan_file(tensor_file(path)) else None
    except (WeightsError, ValueError, OSError):
        return None


def _derived(refs: Mapping[str, TensorRef], layers: int) -> dict[str, Any]:
    """WanTransformer3DModel's config fields that the shapes of `refs` (diffusers' names)
    tell."""
    dim, in_channels, *patch = refs["patch_embedding.weight"].shape
    config: dict[str, Any] = {
        "_class_name": "WanTransformer3DModel", "patch_size": tuple(patch),
        "in_channels": in_channels,
        "out_channels": refs["proj_out.weight"].shape[0] // math.prod(patch),
        "num_layers": layers,
        "text_dim": refs["condition_embedder.text_embedder.linear_1.weight"].shape[1],
        "freq_dim": refs["condition_embedder.time_embedder.linear_1.weight"].shape[1],
        "ffn_dim": refs["blocks.0.ffn.net.0.proj.weight"].shape[0],
        "cross_attn_norm": "blocks.0.norm2.weight" in refs,
        "image_dim": None, "added_kv_proj_dim": None,
    }
    image = "condition_embedder.image_embedder.ff.net.0.proj.weight"
    if image in refs:
        config["image_dim"] = refs[image].shape[1]
        config["added_kv_proj_dim"] = refs["blocks.0.attn2.add_k_proj.weight"].shape[1]
    for key in ("img_emb.emb_pos", "condition_embedder.image_embedder.pos_embed"):
        if key in refs:  # Wan 2.1 FLF2V (first and last frame), which the model refuses
            config["pos_embed_seq_len"] = refs[key].shape[1]
    config["_dim"] = dim
    return config


def load_wan_file(path: str | os.PathLike[str], *, dtype: Any = None,
                  config: Mapping[str, Any] | None = None) -> ComponentWeights:
    """Lazy WanTransformer3DModel weights of a .safetensors or .gguf file (module
    docstring), with `.config` read from the shapes, `config` (a folder's
    transformer/config.json) laid under them for what shapes do not say (the head count).
    `dtype`: None (as stored, bf16 and fp8 as float32), "float16" or "float32". WeightsError
    naming the file when it holds no Wan transformer. ComfyUI: `UNETLoader` of
    `wan2.1_t2v_1.3B_bf16.safetensors` (`UnetLoaderGGUF` of a .gguf); diffusers:
    `WanTransformer3DModel.from_single_file(path)`."""
    file = tensor_file(path)
    layout = _layout(file)
    if layout is None:
        raise WeightsError(f"{file.path}: no blocks.0.self_attn.q.weight, head.head.weight "
                           "and patch_embedding.weight tensors: not a Wan transformer file")
    prefix, original = layout
    if any(key.startswith((prefix + "vace_", prefix + "face_", prefix + "motion_"))
           for key in file.keys()):
        raise WeightsError(f"{file.path}: a Wan VACE / Animate transformer file, which is not "
                           "read yet; run Wan VACE from its diffusers folder (WanVACEPipeline)")
    refs = {}
    for key in file.keys():
        if key.startswith(prefix):
            name = key[len(prefix):]
            refs[wan_name(name) if original else name] = TensorRef(file, key,
                                                                   tuple(file.shape(key)))
    try:
        derived = _derived(refs, block_count(file, prefix, "blocks."))
    except KeyError as missing:
        raise WeightsError(f"{file.path}: the Wan transformer's tensor {missing} (diffusers' "
                           "name) is missing; the file is incomplete") from None
    dim = derived.pop("_dim")
    given = dict(config or {})
    heads = given.get("num_attention_heads")
    head_dim = given.get("attention_head_dim")
    if not heads or not head_dim or heads * head_dim != dim:
        if dim % _HEAD_DIM:
            raise WeightsError(f"{file.path}: a Wan transformer {dim} wide, not a multiple of "
                               f"Wan's {_HEAD_DIM}-wide heads; give --base the diffusers "
                               "folder whose transformer/config.json names its heads")
        heads, head_dim = dim // _HEAD_DIM, _HEAD_DIM
    derived.update(num_attention_heads=heads, attention_head_dim=head_dim)
    return ComponentWeights("transformer", {**given, **derived}, refs,
                            dtype=resolve_dtype(dtype))
