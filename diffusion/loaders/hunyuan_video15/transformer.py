"""HunyuanVideo 1.5 transformers: a diffusers folder's `transformer/` (config.json and
diffusion_pytorch_model*.safetensors, one file or sharded, read as stored), or Tencent's
original release read lazily under diffusers' HunyuanVideo15Transformer3DModel names: a folder
of tencent/HunyuanVideo-1.5's transformer/ (`480p_t2v/`, `720p_i2v/`, ...: Tencent's
config.json and its weights), or one .safetensors file in that layout, bare or under ComfyUI's
`model.diffusion_model.`.

The original's mapping is diffusers' scripts/convert_hunyuan_video1_5_to_diffusers.py: what
HunyuanImage 2.1's shares (keymaps/hunyuan_keys: renames, the refiner's fused `self_attn_qkv`
split by rows, the final adaLN's (shift, scale) halves swapped into diffusers' (scale,
shift), the blocks' q/k/v split or fused), plus SigLIP's projection (`vision_in.proj.0/1/3/4`)
and `cond_type_embedding`. The config comes from the tensor shapes, and from Tencent's
config.json where there is one: the rotary axes (`rope_dim_list`; a file alone: the release's
16 + 56 + 56 of its 128-wide heads), the resolution (`ideal_resolution`, else the name's
480p / 720p) whose `target_size` the pipelines read.

    weights = load_hunyuan_video15_transformer("HunyuanVideo-1.5-Diffusers-480p_t2v/transformer")
    weights = load_hunyuan_video15_transformer("HunyuanVideo-1.5/transformer/720p_i2v")
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

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
    whole_ref,
)
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype

__all__ = ["is_hunyuan_video15_file", "load_hunyuan_video15_transformer"]

_WHAT = "HunyuanVideo 1.5"
_CLASS = "HunyuanVideo15Transformer3DModel"
_MARKERS = ("cond_type_embedding.weight", "txt_in.individual_token_refiner.blocks.0.norm1.weight")
_RENAMES = {**RENAMES, "vision_in.proj.0": "image_embedder.norm_in",
            "vision_in.proj.1": "image_embedder.linear_1",
            "vision_in.proj.3": "image_embedder.linear_2",
            "vision_in.proj.4": "image_embedder.norm_out"}
_RELEASE_ROPE = {128: (16, 56, 56)}  # head dim -> the release's rotary axes
_TARGET_SIZES = {"480p": 640, "720p": 960}  # diffusers' converter's target_size per release


def is_hunyuan_video15_file(file: TensorFile) -> bool:
    """The file holds a HunyuanVideo 1.5 transformer in Tencent's layout (bare or under
    model.diffusion_model.)."""
    prefix = prefix_of(file, "txt_in.")
    return all(prefix + marker in file for marker in _MARKERS)


class _Joined:
    """Several files' tensors as one TensorFile (Tencent's weights in shards), for the
    mapping to read names and shapes; its refs are then pointed at the shard holding each."""

    def __init__(self, path: Path, refs: Mapping[str, TensorRef]) -> None:
        self._path, self._refs = path, refs

    @property
    def path(self) -> Path:
        return self._path

    @property
    def metadata(self) -> Mapping[str, Any]:
        return {}

    def keys(self) -> list[str]:
        return list(self._refs)

    def __contains__(self, key: object) -> bool:
        return key in self._refs

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._refs[key].shape)

    def read(self, key: str, *, rows: tuple[int, int] | None = None) -> np.ndarray:
        ref = self._refs[key]
        return ref.file.read(ref.key, rows=rows)


def _original_refs(file: TensorFile, prefix: str, dim: int, doubles: int,
                   refiners: int) -> dict[str, TensorRef]:
    """Refs of every original tensor under its diffusers name."""
    refs = renamed_refs(file, prefix, _RENAMES, OPTIONAL, "time_embed", _WHAT)
    refs.update(refiner_refs(file, prefix, dim, refiners, _WHAT))
    refs.update(double_refs(file, prefix, dim, doubles, _WHAT))
    refs["cond_type_embed.weight"] = whole_ref(file, prefix, "cond_type_embedding.weight", _WHAT)
    return refs


def _original_config(file: TensorFile, prefix: str, path: Path,
                     tencent: dict[str, Any]) -> dict[str, Any]:
    """HunyuanVideo15Transformer3DModel's config read from the shapes and Tencent's config
    (`tencent`, empty for a file alone)."""
    def shape(key: str) -> tuple[int, ...]:
        return tuple(file.shape(key_of(file, prefix, key, _WHAT)))

    dim, in_channels, patch_t, patch, patch_w = shape("img_in.proj.weight")
    head_dim = shape("double_blocks.0.img_attn_q_norm.weight")[0]
    rope = tencent.get("rope_dim_list") or _RELEASE_ROPE.get(head_dim)
    if rope is None:
        raise WeightsError(f"{path}: attention heads {head_dim} wide, not the release's 128, "
                           "and no Tencent config.json beside the weights gives their "
                           "rope_dim_list; put the release's config.json beside them")
    if patch != patch_w:
        raise WeightsError(f"{path}: img_in.proj's patches are {patch} x {patch_w}; "
                           f"{_WHAT} patches are square")
    name = path.name.lower()
    resolution = str(tencent.get("ideal_resolution") or ("720p" if "720p" in name else "480p"))
    task = str(tencent.get("ideal_task") or ("i2v" if "i2v" in name else "t2v"))
    return {
        "_class_name": _CLASS, "in_channels": in_channels,
        "out_channels": shape("final_layer.linear.weight")[0] // (patch_t * patch * patch),
        "num_attention_heads": dim // head_dim, "attention_head_dim": head_dim,
        "num_layers": block_count(file, prefix, "double_blocks."),
        "num_refiner_layers": block_count(file, prefix, "txt_in.individual_token_refiner.blocks."),
        "mlp_ratio": 4.0, "patch_size": patch, "patch_size_t": patch_t, "qk_norm": "rms_norm",
        "text_embed_dim": shape("txt_in.input_embedder.weight")[1],
        "text_embed_2_dim": shape("byt5_in.layernorm.weight")[0],
        "image_embed_dim": shape("vision_in.proj.0.weight")[0], "rope_theta": 256.0,
        "rope_axes_dim": tuple(int(a) for a in rope),
        "target_size": _TARGET_SIZES.get(resolution, 640), "task_type": task,
        "use_meanflow": prefix + "time_r_in.mlp.0.weight" in file,
    }


def _load_original(path: Path, file: TensorFile, owners: Mapping[str, TensorFile] | None,
                   tencent: dict[str, Any], dtype: Any) -> ComponentWeights:
    """`file`'s original tensors as diffusers' (`owners`: the shard of each, where `file`
    joins several)."""
    if not is_hunyuan_video15_file(file):
        raise WeightsError(f"{path}: no {_MARKERS[0]} and {_MARKERS[1]} tensors: not a "
                           f"{_WHAT} transformer in Tencent's layout")
    prefix = prefix_of(file, "txt_in.")
    config = _original_config(file, prefix, path, tencent)
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    refs = _original_refs(file, prefix, dim, config["num_layers"], config["num_refiner_layers"])
    if owners is not None:
        refs = {k: ref._replace(file=owners[ref.key]) for k, ref in refs.items()}
    return SwappedHalvesWeights("transformer", config, refs,
                                swapped={f"{FINAL_ADALN}.weight", f"{FINAL_ADALN}.bias"},
                                dtype=resolve_dtype(dtype))


def load_hunyuan_video15_transformer(path: str | os.PathLike[str], *, dtype: Any = None,
                                     variant: str | None = None) -> ComponentWeights:
    """Lazy HunyuanVideo15Transformer3DModel weights (diffusers' names, `.config` diffusers'
    config.json or the original's read from its shapes and Tencent's config.json) of a
    diffusers `transformer/` folder, a folder of Tencent's release, or an original
    .safetensors file. `dtype`: None (as stored, bf16 as float32), "float16" or "float32";
    `variant` (a folder's): e.g. "fp16". WeightsError in one line naming the file or folder
    when it is none of these or a part is missing. diffusers:
    `HunyuanVideo15Transformer3DModel.from_pretrained(folder)`."""
    root = Path(path)
    if not root.exists():
        raise WeightsError(f"{root}: no such file or folder; give a {_WHAT} transformer/ "
                           "folder, a folder of Tencent's release or its .safetensors file")
    if root.is_file():
        file = SafetensorsFile(root)
        return _load_original(root, file, None, {}, dtype)
    config = read_json(root / "config.json")
    refs, _where = weight_refs(root, "diffusion_pytorch_model", variant)
    if config.get("_class_name") == _CLASS:
        return ComponentWeights("transformer", config, refs, dtype=resolve_dtype(dtype))
    if "_class_name" in config:
        raise WeightsError(f"{root / 'config.json'}: _class_name {config.get('_class_name')!r} "
                           f"is not a {_CLASS}")
    owners = {ref.key: ref.file for ref in refs.values()}
    return _load_original(root, _Joined(root, refs), owners, config, dtype)
