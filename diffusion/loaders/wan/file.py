"""Wan transformers in one file, as ComfyUI users download them: the split diffusion model of
Comfy-Org's repackaged Wan 2.1 / 2.2 (`wan2.1_t2v_1.3B_bf16.safetensors`,
`wan2.1_i2v_480p_14B_fp8_e4m3fn.safetensors`, `wan2.2_t2v_high_noise_14B_fp8_scaled
.safetensors`, ...; ComfyUI's scaled fp8 read as its float values), bare or under
`model.diffusion_model.`, and city96's GGUFs of them (`wan2.1-t2v-14b-Q4_K_M.gguf`: the same
names; a `GGUFFile` reads like a safetensors file, its quantized matrices kept quantized by
`load_component`), read lazily. Wan VACE too (Comfy-Org's `wan2.1_vace_14B_fp16.safetensors`,
`wan2.1_vace_1.3B_fp16.safetensors`: `vace_blocks.N.*` and `vace_patch_embedding.*` beside the
base model's tensors), read as diffusers' WanVACETransformer3DModel; or a base Wan text-to-video
file with a VACE module file that holds only those (Kijai's
`Wan2_1-VACE_module_14B_bf16.safetensors`: `vace_module`).

The files keep Wan's original names (`blocks.N.self_attn.q.weight`, `blocks.N.norm3.weight`,
`time_embedding.0.weight`, `head.head.weight`, ...), renamed to diffusers'
WanTransformer3DModel names as diffusers' `convert_wan_transformer_to_diffusers` does
(`WAN_RENAMES`, applied in order to every key); a file already in diffusers' names is taken
as it is. The widths, depth and channels come from the tensor shapes; the head count from
`config` (a `--base` folder's transformer/config.json) or Wan's 128-wide heads; VACE's
`vace_layers` (the main blocks its hints follow) from `config` when it names as many as the
file has VACE blocks, else spaced evenly from block 0 as ComfyUI spaces them (the 1.3B's 15
over 30 blocks: every second; the 14B's 8 over 40: every fifth).
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

__all__ = ["WAN_RENAMES", "is_vace_module", "is_wan_file", "load_wan_file", "wan_file_family",
           "wan_name"]

# diffusers' TRANSFORMER_KEYS_RENAME_DICT (single_file_utils), VACE's included, without
# Animate's and the face adapter's; norm2 and norm3 trade places (the original's norm3 is the
# cross-attention norm, diffusers' norm2)
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
    ("before_proj", "proj_in"), ("after_proj", "proj_out"),
)
_PREFIX = "model.diffusion_model."
_ORIGINAL = ("blocks.0.self_attn.q.weight", "head.head.weight", "patch_embedding.weight")
_DIFFUSERS = ("blocks.0.attn1.to_q.weight", "proj_out.weight", "patch_embedding.weight")
# a VACE module file's marks in Wan's and in diffusers' names
_MODULE = ((("vace_patch_embedding.weight", "vace_blocks.0.after_proj.weight"), True),
           (("vace_patch_embedding.weight", "vace_blocks.0.proj_out.weight"), False))
_HEAD_DIM = 128  # every Wan's (1.3B: 12 heads of 1536; 5B: 24 of 3072; 14B: 40 of 5120)


def wan_name(key: str) -> str:
    """diffusers' name of the original Wan tensor `key` (WAN_RENAMES in order)."""
    for old, new in WAN_RENAMES:
        key = key.replace(old, new)
    return key


def _layout(file: TensorFile, kinds: tuple[tuple[tuple[str, ...], bool], ...] = (
        (_ORIGINAL, True), (_DIFFUSERS, False))) -> tuple[str, bool] | None:
    """(prefix, original names?) of the Wan transformer in `file` (`kinds`: the tensors that
    mark each naming, the VACE module's with _MODULE), None when it holds none."""
    for prefix in (_PREFIX, ""):
        for markers, original in kinds:
            if all(prefix + marker in file for marker in markers):
                return prefix, original
    return None


def is_vace_module(path: str | os.PathLike[str]) -> bool:
    """The .safetensors file `path` holds a Wan VACE module alone (Kijai's
    Wan2_1-VACE_module_*: vace_* tensors, no base model). Reads the header only."""
    try:
        file = tensor_file(path)
    except (WeightsError, ValueError, OSError):
        return False
    return _layout(file) is None and _layout(file, _MODULE) is not None


def is_wan_file(file: TensorFile) -> bool:
    """The file holds a Wan transformer (original or diffusers names, bare or under
    model.diffusion_model.)."""
    return _layout(file) is not None


def wan_file_family(path: str | os.PathLike[str]) -> str | None:
    """"wan" for a .safetensors or .gguf file holding a Wan transformer, "wan-vace" for one
    holding Wan VACE's, "wan-animate" for Wan 2.2 Animate's (its pose_patch_embedding, read by
    animate.load_wan_animate_transformer), None otherwise (a broken file is left for loading to
    name). Reads the header only."""
    if Path(path).suffix.lower() not in (".safetensors", ".gguf") or not Path(path).is_file():
        return None
    try:
        file = tensor_file(path)
    except (WeightsError, ValueError, OSError):
        return None
    layout = _layout(file)
    if layout is None:
        return None
    if layout[0] + "pose_patch_embedding.weight" in file:
        return "wan-animate"
    return "wan-vace" if layout[0] + "vace_patch_embedding.weight" in file else "wan"


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


def _refs(file: TensorFile, prefix: str, original: bool, start: str = ""
          ) -> dict[str, TensorRef]:
    """The tensors of `file` under `prefix` whose names begin with `start`, by diffusers'
    name."""
    return {wan_name(key[len(prefix):]) if original else key[len(prefix):]:
            TensorRef(file, key, tuple(file.shape(key)))
            for key in file.keys() if key.startswith(prefix + start)}


def _with_module(refs: dict[str, TensorRef], base: TensorFile,
                 module: str | os.PathLike[str]) -> None:
    """`refs` (a base Wan transformer's) joined by the VACE module file `module`'s."""
    if "vace_patch_embedding.weight" in refs:
        raise WeightsError(f"{base.path}: already a Wan VACE transformer; give a VACE module "
                           "only beside a plain Wan text-to-video transformer file")
    file = tensor_file(module)
    layout = _layout(file, _MODULE)
    if layout is None:
        raise WeightsError(f"{file.path}: no vace_patch_embedding.weight and vace_blocks.0."
                           "after_proj.weight tensors: not a Wan VACE module file")
    refs.update(_refs(file, *layout, "vace_"))


def _vace(refs: Mapping[str, TensorRef], layers: int, count: int,
          given: Mapping[str, Any], where: Any) -> dict[str, Any]:
    """WanVACETransformer3DModel's fields for `count` VACE blocks over `layers` main blocks:
    the `given` config's vace_layers when it names as many, else ComfyUI's even spacing."""
    listed = list(given.get("vace_layers") or ())
    if not 0 < count <= layers:
        raise WeightsError(f"{where}: {count} VACE blocks for {layers} main blocks; the file "
                           "is incomplete")
    chosen = listed if len(listed) == count else list(range(0, layers, layers // count))[:count]
    return {"_class_name": "WanVACETransformer3DModel", "vace_layers": chosen,
            "vace_in_channels": refs["vace_patch_embedding.weight"].shape[1]}


def load_wan_file(path: str | os.PathLike[str], *, dtype: Any = None,
                  config: Mapping[str, Any] | None = None,
                  vace_module: str | os.PathLike[str] | None = None) -> ComponentWeights:
    """Lazy WanTransformer3DModel weights of a .safetensors or .gguf file (module
    docstring), with `.config` read from the shapes, `config` (a folder's
    transformer/config.json) laid under them for what shapes do not say (the head count,
    VACE's layers). `dtype`: None (as stored, bf16 and fp8 as float32), "float16" or
    "float32"; `vace_module`: a VACE module file joined to a plain Wan file. A file with
    VACE's tensors (or joined to a module) gives WanVACETransformer3DModel's weights, its
    config's `_class_name` saying so. WeightsError naming the file when it holds no Wan
    transformer. ComfyUI: `UNETLoader` of `wan2.1_t2v_1.3B_bf16.safetensors` (`UnetLoaderGGUF`
    of a .gguf); diffusers: `WanTransformer3DModel.from_single_file(path)`
    (`WanVACETransformer3DModel.from_single_file` for VACE)."""
    file = tensor_file(path)
    layout = _layout(file)
    if layout is None:
        if _layout(file, _MODULE) is not None:
            raise WeightsError(f"{file.path}: a Wan VACE module alone (its vace_* tensors "
                               "only); give it as --vace-module beside the Wan text-to-video "
                               "transformer file of its size (wan2.1_t2v_14B_*.safetensors)")
        raise WeightsError(f"{file.path}: no blocks.0.self_attn.q.weight, head.head.weight "
                           "and patch_embedding.weight tensors: not a Wan transformer file")
    prefix, original = layout
    if any(key.startswith((prefix + "face_", prefix + "motion_")) for key in file.keys()):
        raise WeightsError(f"{file.path}: a Wan 2.2 Animate transformer file: read it with "
                           "load_wan_animate_transformer (txt2vid --model FILE --base FOLDER "
                           "does)")
    refs = _refs(file, prefix, original)
    if vace_module is not None:
        _with_module(refs, file, vace_module)
    layers = block_count(file, prefix, "blocks.")
    try:
        derived = _derived(refs, layers)
    except KeyError as missing:
        raise WeightsError(f"{file.path}: the Wan transformer's tensor {missing} (diffusers' "
                           "name) is missing; the file is incomplete") from None
    dim = derived.pop("_dim")
    given = dict(config or {})
    count = 1 + max((int(key.split(".")[1]) for key in refs if key.startswith("vace_blocks.")),
                    default=-1)
    if "vace_patch_embedding.weight" in refs:
        derived.update(_vace(refs, layers, count, given, vace_module or file.path))
    else:  # a VACE folder's config laid under a plain file: no VACE fields
        given = {k: v for k, v in given.items() if not k.startswith("vace_")}
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
