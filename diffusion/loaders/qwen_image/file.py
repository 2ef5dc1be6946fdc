"""Qwen-Image transformers in one file, as ComfyUI users have them: the split diffusion model
(`qwen_image_bf16.safetensors`, `qwen_image_fp8_e4m3fn.safetensors`, ComfyUI's scaled fp8 read
as its float values), bare or under `model.diffusion_model.`, and the GGUFs converted from it
(city96's `qwen-image-Q8_0.gguf`: the same names; a `GGUFFile` reads like a safetensors file,
its quantized matrices kept quantized by `load_component`), read lazily. Qwen-Image-Edit's
transformers (`qwen_image_edit_fp8_e4m3fn.safetensors`, `qwen_image_edit_2509_bf16.safetensors`,
`Qwen-Image-Edit-2509-Q8_0.gguf`) have the same tensors: their file name says which they are
(`qwenimage_edit_file_family`).

ComfyUI's Qwen-Image network names its tensors as diffusers' QwenImageTransformer2DModel does
(`img_in`, `txt_norm`, `transformer_blocks.N.img_mod.1`, `attn.add_q_proj`, `img_mlp.net.0.proj`,
`norm_out.linear`, ...), so a file needs no key map, only its prefix dropped: what diffusers'
own single-file conversion of the Qwen-Image line does (`convert_qwen_image21_transformer_
checkpoint_to_diffusers` strips `model.diffusion_model.`; Qwen-Image 1 needs nothing more). The
widths and depths come from the tensor shapes; the rotary split (`axes_dims_rope`) is
Qwen-Image's unless `config` gives it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.gguf_file import tensor_file
from ..keymaps.dit_keys import block_count, key_of, prefix_of
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype

__all__ = ["is_qwenimage_file", "load_qwenimage_file", "qwenimage_edit_file_family",
           "qwenimage_file_family"]

_MARKERS = ("transformer_blocks.0.img_mod.1.weight", "txt_norm.weight")
_PATCH = 2  # Qwen-Image's patch size: proj_out's rows are patch^2 * out_channels
_ROPE = {"axes_dims_rope": (16, 56, 56)}


def is_qwenimage_file(file: TensorFile) -> bool:
    """The file holds a Qwen-Image transformer (diffusers' names, bare or under
    model.diffusion_model.)."""
    prefix = prefix_of(file, "transformer_blocks.")
    return all(prefix + marker in file for marker in _MARKERS)


def _holds_transformer(path: str | os.PathLike[str]) -> bool:
    """A .safetensors or .gguf file holding a Qwen-Image transformer (a broken file is left
    for loading to name). Reads the header only."""
    if Path(path).suffix.lower() not in (".safetensors", ".gguf") or not Path(path).is_file():
        return False
    try:
        return is_qwenimage_file(tensor_file(path))
    except (WeightsError, ValueError, OSError):
        return False


def _edit_name(path: str | os.PathLike[str]) -> str | None:
    """The edit family a file's name says: "qwen-image-edit-plus" for Edit-2509 and later
    (2509, 2511 or "plus" in the name), "qwen-image-edit" for the first; None: no "edit"."""
    name = Path(path).name.lower().replace("-", "_")
    if "edit" not in name:
        return None
    later = any(mark in name for mark in ("2509", "2511", "plus"))
    return "qwen-image-edit-plus" if later else "qwen-image-edit"


def qwenimage_file_family(path: str | os.PathLike[str]) -> str | None:
    """"qwen-image" for a .safetensors or .gguf file holding a Qwen-Image transformer whose
    name does not say it is an edit model's (`qwenimage_edit_file_family`), None otherwise."""
    if _edit_name(path) is not None or not _holds_transformer(path):
        return None
    return "qwen-image"


def qwenimage_edit_file_family(path: str | os.PathLike[str]) -> str | None:
    """"qwen-image-edit" / "qwen-image-edit-plus" for a Qwen-Image transformer file whose
    name says it is Qwen-Image-Edit's / Edit-2509's or later (ComfyUI's
    `qwen_image_edit_2509_fp8_e4m3fn.safetensors`, QuantStack's `Qwen-Image-Edit-2509-Q8_0.
    gguf`): their tensors are Qwen-Image's to the name. None otherwise."""
    family = _edit_name(path)
    return family if family is not None and _holds_transformer(path) else None


def load_qwenimage_file(path: str | os.PathLike[str], *, dtype: Any = None,
                        config: Mapping[str, Any] | None = None) -> ComponentWeights:
    """Lazy QwenImageTransformer2DModel weights of a .safetensors or .gguf file, with
    `.config` read from the shapes, `config` (a folder's transformer/config.json) laid under
    them for what shapes do not say. `dtype`: None (as stored, bf16 as float32), "float16" or
    "float32". WeightsError naming the file when it holds no Qwen-Image transformer. ComfyUI:
    `UNETLoader` of `qwen_image_bf16.safetensors`; diffusers:
    `QwenImageTransformer2DModel.from_single_file(path)`."""
    file = tensor_file(path)
    if not is_qwenimage_file(file):
        raise WeightsError(f"{file.path}: no transformer_blocks.0.img_mod.1.weight and "
                           "txt_norm.weight tensors: not a Qwen-Image transformer file")
    prefix = prefix_of(file, "transformer_blocks.")
    if prefix + "__index_timestep_zero__" in file:
        raise WeightsError(f"{file.path}: a Qwen-Image-Edit 2511 transformer (zero_cond_t), "
                           "which is not supported; use a Qwen-Image transformer file")
    dim, in_channels = file.shape(key_of(file, prefix, "img_in.weight", "Qwen-Image"))
    head_dim = file.shape(key_of(file, prefix, "transformer_blocks.0.attn.norm_q.weight",
                                 "Qwen-Image"))[0]
    derived = {
        "_class_name": "QwenImageTransformer2DModel", "patch_size": _PATCH,
        "in_channels": in_channels,
        "out_channels": file.shape(key_of(file, prefix, "proj_out.weight",
                                          "Qwen-Image"))[0] // _PATCH ** 2,
        "num_layers": block_count(file, prefix, "transformer_blocks."),
        "attention_head_dim": head_dim, "num_attention_heads": dim // head_dim,
        "joint_attention_dim": file.shape(key_of(file, prefix, "txt_norm.weight",
                                                 "Qwen-Image"))[0],
    }
    refs = {name[len(prefix):]: TensorRef(file, name, tuple(file.shape(name)))
            for name in file.keys() if name.startswith(prefix)}
    return ComponentWeights("transformer", {**_ROPE, **dict(config or {}), **derived}, refs,
                            dtype=resolve_dtype(dtype))
