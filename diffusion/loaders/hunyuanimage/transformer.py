"""HunyuanImage 2.1 transformers: a diffusers folder's `transformer/` (config.json and
diffusion_pytorch_model*.safetensors, read as stored), or Tencent's original single file
(`hunyuanimage2.1.safetensors`, `hunyuanimage2.1-distilled.safetensors` of
tencent/HunyuanImage-2.1's dit/; bare or under ComfyUI's `model.diffusion_model.`) read
lazily under diffusers' HunyuanImageTransformer2DModel names.

The original's mapping is diffusers' scripts/convert_hunyuan_image_to_diffusers.py: renames,
the refiner's fused `self_attn_qkv` split by rows, and the final adaLN's (shift, scale) halves
swapped into diffusers' (scale, shift). The blocks' projections are read in either form: split
(`img_attn_q`, `linear1_q` ... `linear1_mlp`, `linear2.fc`: what the converter reads) or fused
(`img_attn_qkv`, `linear1`, `linear2`: what Tencent's `convert_hunyuan_dict_for_tensor_parallel`
splits into the former), the fused ones by rows. The config comes from the tensor shapes.

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
from ..keymaps.dit_keys import SwappedHalvesWeights, block_count, key_of, prefix_of, split_rows
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype

__all__ = ["is_hunyuanimage_file", "load_hunyuanimage_transformer"]

_WHAT = "HunyuanImage"
_MARKERS = ("byt5_in.fc1.weight", "txt_in.individual_token_refiner.blocks.0.norm1.weight")
_SWAPPED = "norm_out.linear"  # the original's final_layer.adaLN_modulation.1
_RENAMES = {  # original -> diffusers, outside the blocks (each .weight and .bias)
    "byt5_in.layernorm": "context_embedder_2.norm", "byt5_in.fc1": "context_embedder_2.linear_1",
    "byt5_in.fc2": "context_embedder_2.linear_2", "byt5_in.fc3": "context_embedder_2.linear_3",
    "img_in.proj": "x_embedder.proj", "txt_in.input_embedder": "context_embedder.proj_in",
    "txt_in.t_embedder.mlp.0": "context_embedder.time_text_embed.timestep_embedder.linear_1",
    "txt_in.t_embedder.mlp.2": "context_embedder.time_text_embed.timestep_embedder.linear_2",
    "txt_in.c_embedder.linear_1": "context_embedder.time_text_embed.text_embedder.linear_1",
    "txt_in.c_embedder.linear_2": "context_embedder.time_text_embed.text_embedder.linear_2",
    "time_in.mlp.0": "time_guidance_embed.timestep_embedder.linear_1",
    "time_in.mlp.2": "time_guidance_embed.timestep_embedder.linear_2",
    "time_r_in.mlp.0": "time_guidance_embed.timestep_embedder_r.linear_1",
    "time_r_in.mlp.2": "time_guidance_embed.timestep_embedder_r.linear_2",
    "guidance_in.mlp.0": "time_guidance_embed.guidance_embedder.linear_1",
    "guidance_in.mlp.2": "time_guidance_embed.guidance_embedder.linear_2",
    "final_layer.linear": "proj_out", "final_layer.adaLN_modulation.1": _SWAPPED,
}
_OPTIONAL = ("byt5_in.", "time_r_in.", "guidance_in.")  # the glyph, meanflow, distilled parts
_REFINER = {"norm1": "norm1", "norm2": "norm2", "self_attn_proj": "attn.to_out.0",
            "mlp.fc1": "ff.net.0.proj", "mlp.fc2": "ff.net.2",
            "adaLN_modulation.1": "norm_out.linear"}
_DOUBLE = {"img_mod.linear": "norm1.linear", "txt_mod.linear": "norm1_context.linear",
           "img_attn_proj": "attn.to_out.0", "txt_attn_proj": "attn.to_add_out",
           "img_mlp.fc1": "ff.net.0.proj", "img_mlp.fc2": "ff.net.2",
           "txt_mlp.fc1": "ff_context.net.0.proj", "txt_mlp.fc2": "ff_context.net.2"}
_DOUBLE_NORMS = {"img_attn_q_norm": "attn.norm_q", "img_attn_k_norm": "attn.norm_k",
                 "txt_attn_q_norm": "attn.norm_added_q", "txt_attn_k_norm": "attn.norm_added_k"}
_DOUBLE_QKV = {"img_attn": ("attn.to_q", "attn.to_k", "attn.to_v"),
               "txt_attn": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}
_SINGLE_SPLIT = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")


def is_hunyuanimage_file(file: TensorFile) -> bool:
    """The file holds a HunyuanImage 2.1 transformer in Tencent's layout (bare or under
    model.diffusion_model.)."""
    prefix = prefix_of(file, "txt_in.")
    return all(prefix + marker in file for marker in _MARKERS)


def _original_refs(file: TensorFile, prefix: str, dim: int, doubles: int, singles: int,
                   refiners: int) -> dict[str, TensorRef]:
    """Refs of every original tensor under its diffusers name."""
    refs: dict[str, TensorRef] = {}

    def name(key: str) -> str:
        return key_of(file, prefix, key, _WHAT)

    def whole(source: str, target: str) -> None:
        refs[target] = TensorRef(file, name(source), file.shape(name(source)))

    def fused_or_split(fused: str, parts: tuple[str, ...], targets: tuple[str, ...],
                       sizes: tuple[int, ...]) -> None:
        if prefix + fused in file:
            refs.update(split_rows(file, name(fused), targets, sizes))
        else:
            for part, target in zip(parts, targets):
                whole(part, target)

    for p in ("weight", "bias"):
        for source, target in _RENAMES.items():
            if source.startswith(_OPTIONAL) and prefix + f"{source}.{p}" not in file:
                continue
            whole(f"{source}.{p}", f"{target}.{p}")
        for i in range(refiners):
            src, dst = f"txt_in.individual_token_refiner.blocks.{i}.", \
                f"context_embedder.token_refiner.refiner_blocks.{i}."
            for source, target in _REFINER.items():
                whole(f"{src}{source}.{p}", f"{dst}{target}.{p}")
            refs.update(split_rows(file, name(f"{src}self_attn_qkv.{p}"), tuple(
                f"{dst}attn.to_{x}.{p}" for x in "qkv"), (dim,) * 3))
        for i in range(doubles):
            src, dst = f"double_blocks.{i}.", f"transformer_blocks.{i}."
            for source, target in _DOUBLE.items():
                whole(f"{src}{source}.{p}", f"{dst}{target}.{p}")
            for stream, targets in _DOUBLE_QKV.items():
                fused_or_split(f"{src}{stream}_qkv.{p}",
                               tuple(f"{src}{stream}_{x}.{p}" for x in "qkv"),
                               tuple(f"{dst}{t}.{p}" for t in targets), (dim,) * 3)
        for i in range(singles):
            src, dst = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
            whole(f"{src}modulation.linear.{p}", f"{dst}norm.linear.{p}")
            out = f"{src}linear2.fc.{p}" if prefix + f"{src}linear2.fc.{p}" in file \
                else f"{src}linear2.{p}"
            whole(out, f"{dst}proj_out.{p}")
            fused = f"{src}linear1.{p}"
            mlp = (file.shape(name(fused))[0] - 3 * dim if prefix + fused in file
                   else file.shape(name(f"{src}linear1_mlp.{p}"))[0])
            fused_or_split(fused, tuple(f"{src}linear1_{x}.{p}" for x in ("q", "k", "v", "mlp")),
                           tuple(f"{dst}{t}.{p}" for t in _SINGLE_SPLIT), (dim, dim, dim, mlp))
    for i in range(doubles):
        for source, target in _DOUBLE_NORMS.items():
            whole(f"double_blocks.{i}.{source}.weight", f"transformer_blocks.{i}.{target}.weight")
    for i in range(singles):
        for x in "qk":
            whole(f"single_blocks.{i}.{x}_norm.weight",
                  f"single_transformer_blocks.{i}.attn.norm_{x}.weight")
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
                                swapped={f"{_SWAPPED}.weight", f"{_SWAPPED}.bias"},
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
