"""Z-Image transformers in one file, in the original repository's layout: what ComfyUI
loads (`z_image_turbo_bf16.safetensors`) and how fine-tunes are shared (bare, or under
`model.diffusion_model.`; bf16, and ComfyUI's scaled fp8 read as its float values), and the
GGUFs converted from them (city96's kind: the same names; a `GGUFFile` reads like a
safetensors file, its quantized matrices kept quantized by `load_component(slices=True)`),
read lazily under diffusers' ZImageTransformer2DModel names.

The mapping is diffusers' `convert_z_image_transformer_checkpoint_to_diffusers`
(loaders/single_file_utils.py): `x_embedder` / `final_layer` become the `2-1` entries of
`all_x_embedder` / `all_final_layer`; each block's fused `attention.qkv` is split by rows
into to_q, to_k, to_v (`SafetensorsFile.read(rows=...)` reads one third without the rest);
`attention.out` is `to_out.0`, `q_norm` / `k_norm` are `norm_q` / `norm_k`; everything else
keeps its name. The widths and depths come from the tensor shapes; the rotary settings
(`axes_dims`, `axes_lens`, `rope_theta`) are Z-Image's unless `config` gives them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.gguf_file import tensor_file
from ..keymaps.dit_keys import block_count, key_of, prefix_of, split_rows
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype

__all__ = ["is_zimage_file", "load_zimage_file", "zimage_file_family"]

_MARKERS = ("layers.0.adaLN_modulation.0.weight", "cap_pad_token")
_RENAMES = (("x_embedder.", "all_x_embedder.2-1."), ("final_layer.", "all_final_layer.2-1."),
            (".attention.out.", ".attention.to_out.0."),
            (".attention.q_norm.", ".attention.norm_q."),
            (".attention.k_norm.", ".attention.norm_k."))
_ROPE = {"rope_theta": 256.0, "t_scale": 1000.0, "axes_dims": (32, 48, 48),
         "axes_lens": (1536, 512, 512)}


def is_zimage_file(file: TensorFile) -> bool:
    """The file holds a Z-Image transformer in the original layout (bare or under
    model.diffusion_model.)."""
    prefix = prefix_of(file, "layers.")
    return all(prefix + marker in file for marker in _MARKERS)


def zimage_file_family(path: str | os.PathLike[str]) -> str | None:
    """"z-image" for a .safetensors or .gguf file holding a Z-Image transformer, None
    otherwise (a broken file is left for loading to name). Reads the header only."""
    if Path(path).suffix.lower() not in (".safetensors", ".gguf") or not Path(path).is_file():
        return None
    try:
        return "z-image" if is_zimage_file(tensor_file(path)) else None
    except (WeightsError, ValueError, OSError):
        return None


def _target(key: str) -> str:
    for old, new in _RENAMES:
        key = key.replace(old, new) if old.startswith(".") else (
            new + key[len(old):] if key.startswith(old) else key)
    return key


def load_zimage_file(path: str | os.PathLike[str], *, dtype: Any = None,
                     config: Mapping[str, Any] | None = None) -> ComponentWeights:
    """Lazy ZImageTransformer2DModel weights (diffusers' names) of an original-layout
    .safetensors or .gguf file, with `.config` read from the shapes, `config` (a folder's
    transformer/config.json) laid under them for what shapes do not say. `dtype`: None (as
    stored, bf16 as float32), "float16" or "float32". diffusers:
    `ZImageTransformer2DModel.from_single_file(path)`."""
    file = tensor_file(path)
    if not is_zimage_file(file):
        raise WeightsError(f"{file.path}: no layers.0.adaLN_modulation.0.weight and "
                           "cap_pad_token tensors: not a Z-Image transformer file")
    prefix = prefix_of(file, "layers.")
    dim, patch_width = file.shape(key_of(file, prefix, "x_embedder.weight", "Z-Image"))
    norm = prefix + "layers.0.attention.q_norm.weight"
    head_dim = file.shape(norm)[0] if norm in file else dim // 30
    derived = {
        "_class_name": "ZImageTransformer2DModel", "all_patch_size": (2,),
        "all_f_patch_size": (1,), "in_channels": patch_width // 4, "dim": dim,
        "n_layers": block_count(file, prefix, "layers."),
        "n_refiner_layers": block_count(file, prefix, "noise_refiner."),
        "n_heads": dim // head_dim, "n_kv_heads": dim // head_dim, "qk_norm": norm in file,
        "cap_feat_dim": file.shape(key_of(file, prefix, "cap_embedder.0.weight", "Z-Image"))[0],
    }
    refs: dict[str, TensorRef] = {}
    for name in file.keys():
        if not name.startswith(prefix) or name.endswith("norm_final.weight"):
            continue
        key = name[len(prefix):]
        if key.endswith(".attention.qkv.weight"):
            stem = key.removesuffix(".qkv.weight")
            refs.update(split_rows(file, name, tuple(f"{stem}.{part}.weight" for part in
                                                     ("to_q", "to_k", "to_v")), (dim,) * 3))
        else:
            refs[_target(key)] = TensorRef(file, name, file.shape(name))
    merged = {**_ROPE, **dict(config or {}), **derived}
    return ComponentWeights("transformer", merged, refs, dtype=resolve_dtype(dtype))
