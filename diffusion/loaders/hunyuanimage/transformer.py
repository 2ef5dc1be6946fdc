"""HunyuanImage 2.1 transformers: a diffusers folder's `transformer/` (config.json and
diffusion_pytorch_model*.safetensors, read as stored), or Tencent's original single file
(`hunyuanimage2.1.safetensors`, `hunyuanimage2.1-distilled.safetensors` of
tencent/HunyuanImage-2.1's dit/; bare or under ComfyUI's `model.diffusion_model.`) read
lazily under diffusers' HunyuanImageTransformer2DModel names.

The original's mapping is diffusers' scripts/convert_hunyuan_image_to_diffusers.py: renames,
the refiner's fused `self_attn_qkv` split by rows, and the final adaLN's (shift, scale) halves
swapped into diffusers' (scale, shift) (keymaps/hunyuan_keys: what HunyuanVideo 1.5 shares).
The blocks' projections are read in either form: split (`img_attn_q`, `linear1_q` ...
`linear1_mlp`, `linear2.fc`: what the converter reads) or fused (`img_attn_qkv`, `linear1`,
`linear2`: what Tencent's `convert_hunyuan_dict_for_tensor_parallel` splits into the former),
the fused ones by rows. The config comes from the tensor shapes.

    weights = load_hunyuanimage_transformer("HunyuanImage-2.1-Diffusers/transformer")
    weights = load_hunyuanimage_transformer("hunyuanimage2.1-distilled.safetensors")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import read_json, weight_refs
from ..formats.safetensors import SafetensorsFile
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

__all__ = ["is_hunyuanimage_file", "load_hunyuanimage_transformer"]

_WHAT = "HunyuanImage"
_MARKERS = ("byt5_in.fc1.weight", "txt_in.individual_token_refiner.blocks.0.norm1.weight")
_RENAMES = {**RENAMES,  # and the distilled checkpoint's guidance embedding
            "guidance_in.mlp.0": "{time}.guidance_embedder.linear_1",
            "guidance_in.mlp.2": "{time}.guidance_embedder.linear_2"}


def is_hunyuanimage_file(file: TensorFile) -> bool:
    """The file holds a HunyuanImage 2.1 transformer in Tencent's layout (bare or under
    model.diffusion_model.); not HunyuanVideo 1.5's, which has the same text inputs and tags
    them with a `cond_type_embedding`."""
    prefix = prefix_of(file, "txt_in.")
    return all(prefix + marker in file for marker in _MARKERS) \
        and prefix + "cond_type_embedding.weight" not in file


def _original_refs(file: TensorFile, prefix: str, dim: int, doubles: int, singles: int,
                   refiners: int) -> dict[str, TensorRef]:
    """Refs of every original tensor under its diffusers name."""
    refs = renamed_refs(file, prefix, _RENAMES, (*OPTIONAL, "guidance_in."),
                        "time_guidance_embed", _WHAT)
    refs.update(refiner_refs(file, prefix, dim, refiners, _WHAT))
    refs.update(double_refs(file, prefix, dim, doubles, _WHAT))
    refs.update(single_refs(file, prefix, dim, singles, _WHAT))
    return refs


def _original_config(file: TensorFile, prefix: str) -> dict[str, Any]:
    """HunyuanImageTransformer2DModel's config read from the shapes."""
    def shape(key: str) -> tuple[int, ...]:
        return tuple(file.shape(key_of(file, prefix, key, _WHAT)))

    dim, in_channels, *patch = shape("img_in.proj.weight")
    head_dim = shape("double_blocks.0.img_attn_q_norm.weight")[0]
    glyph = prefix + "byt5_in.layernorm.weight" in file
    return {
        "_class_name": "HunyuanImageTransformer2DModel", "in_channels": in_channels,
        "out_channels": shape("final_layer.linear.weight")[0] // (patch[0] * patch[1]),
        "num_attention_heads": dim // head_dim, "attention_head_dim": head_dim,
        "num_layers": block_count(file, prefix, "double_blocks."),
        "num_single_layers": block_count(file, prefix, "single_blocks."),
        "num_refiner_layers": block_count(file, prefix, "txt_in.individual_token_refiner.blocks."),
        "mlp_ratio": 4.0, "patch_size": tuple(patch), "qk_norm": "rms_norm",
        "guidance_embeds": prefix + "guidance_in.mlp.0.weight" in file,
        "text_embed_dim": shape("txt_in.input_embedder.weight")[1],
        "text_embed_2_dim": shape("byt5_in.layernorm.weight")[0] if glyph else None,
        "rope_theta": 256.0, "rope_axes_dim": (head_dim // 2, head_dim // 2),
        "use_meanflow": prefix + "time_r_in.mlp.0.weight" in file,
    }


def _load_file(path: Path, dtype: Any) -> ComponentWeights:
    file = SafetensorsFile(path)
    if not is_hunyuanimage_file(file):
        raise WeightsError(f"{path}: no {_MARKERS[0]} and {_MARKERS[1]} tensors: not a "
                           "HunyuanImage 2.1 transformer file")
    prefix = prefix_of(file, "txt_in.")
    config = _original_config(file, prefix)
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    refs = _original_refs(file, prefix, dim, config["num_layers"], config["num_single_layers"],
                          config["num_refiner_layers"])
    return SwappedHalvesWeights("transformer", config, refs,
                                swapped={f"{FINAL_ADALN}.weight", f"{FINAL_ADALN}.bias"},
                                dtype=resolve_dtype(dtype))


def load_hunyuanimage_transformer(path: str | os.PathLike[str], *, dtype: Any = None,
                                  variant: str | None = None) -> ComponentWeights:
    """Lazy HunyuanImageTransformer2DModel weights (diffusers' names, `.config` diffusers'
    config.json or the original's read from its shapes) of a diffusers `transformer/` folder
    or an original .safetensors file. `dtype`: None (as stored, bf16 as float32), "float16" or
    "float32"; `variant` (a folder's): e.g. "fp16". WeightsError in one line naming the file
    or folder when it is neither or a part is missing. diffusers:
    `HunyuanImageTransformer2DModel.from_pretrained(folder)`."""
    root = Path(path)
    if not root.exists():
        raise WeightsError(f"{root}: no such file or folder; give a HunyuanImage 2.1 "
                           "transformer/ folder or its original .safetensors file")
    if root.is_file():
        return _load_file(root, dtype)
    config = read_json(root / "config.json")
    if config.get("_class_name") != "HunyuanImageTransformer2DModel":
        raise WeightsError(f"{root / 'config.json'}: _class_name {config.get('_class_name')!r} "
                           "is not a HunyuanImageTransformer2DModel")
    refs, _where = weight_refs(root, "diffusion_pytorch_model", variant)
    return ComponentWeights("transformer", config, refs, dtype=resolve_dtype(dtype))
