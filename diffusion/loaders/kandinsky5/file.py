"""Kandinsky 5 transformers in one file, in kandinskylab's original layout: what their
repositories ship beside the diffusers folders (`kandinsky5lite_t2i.safetensors`, the
`DiffusionTransformer3D` of github.com/kandinskylab/kandinsky-5 alone, bf16) and what ComfyUI
loads (bare, or under `model.diffusion_model.`; bf16, fp8, and ComfyUI's scaled fp8 read as its
float values, formats.float8), and the GGUFs converted from them (city96's kind: the same
names; a `GGUFFile` reads like a safetensors file, its quantized matrices kept quantized by
`load_component`), read lazily under diffusers' Kandinsky5Transformer3DModel names.

The names need no mapping: diffusers' modules keep the original's attribute names
(`time_embeddings`, `text_embeddings`, `pooled_text_embeddings`, `visual_embeddings`,
`text_transformer_blocks.N.{text_modulation, self_attention, feed_forward}`,
`visual_transformer_blocks.N.{visual_modulation, self_attention, cross_attention,
feed_forward}`, `out_layer`; the attention's `to_query`, `to_key`, `to_value`, `query_norm`,
`key_norm`, `out_layer`), and their patch embedding and output layer flatten a patch in the
same order, so the tensors are read as stored; only the prefix goes. The sizes come from the
shapes (the patch is (1, 2, 2), as in every Kandinsky 5 model; the rotary axes split a head
as (1/4, 3/8, 3/8), as theirs do) unless `config` gives them. The video and image-editing
transformers (kandinsky5lite_t2v_*, *_i2v_*, *_i2i: the latents concatenated with a condition,
2C + 1 channels a patch) are refused in one line: their pipelines are others.
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

__all__ = ["is_kandinsky5_file", "kandinsky5_file_family", "load_kandinsky5_file"]

_MARKERS = ("visual_transformer_blocks.0.visual_modulation.out_layer.weight",
            "text_transformer_blocks.0.text_modulation.out_layer.weight",
            "pooled_text_embeddings.in_layer.weight")
_PATCH = (1, 2, 2)
_WHAT = "Kandinsky 5"


def is_kandinsky5_file(file: TensorFile) -> bool:
    """The file holds a Kandinsky 5 transformer in the original layout (bare or under
    model.diffusion_model.)."""
    prefix = prefix_of(file, "visual_transformer_blocks.")
    return all(prefix + marker in file for marker in _MARKERS)


def kandinsky5_file_family(path: str | os.PathLike[str]) -> str | None:
    """"kandinsky-5" for a .safetensors or .gguf file holding a Kandinsky 5 transformer, None
    otherwise (a broken file is left for loading to name). Reads the header only."""
    if Path(path).suffix.lower() not in (".safetensors", ".gguf") or not Path(path).is_file():
        return None
    try:
        return "kandinsky-5" if is_kandinsky5_file(tensor_file(path)) else None
    except (WeightsError, ValueError, OSError):
        return None


def load_kandinsky5_file(path: str | os.PathLike[str], *, dtype: Any = None,
                         config: Mapping[str, Any] | None = None) -> ComponentWeights:
    """Lazy Kandinsky5Transformer3DModel weights of an original-layout .safetensors or .gguf
    file, `.config` read from the shapes, `config` (a folder's transformer/config.json) laid
    under them for what shapes do not say. `dtype`: None (as stored, bf16 as float32), "float16"
    or "float32". WeightsError in one line for a file of something else or a video / editing
    transformer. diffusers has no `from_single_file` for it; kandinskylab's own code:
    `DiffusionTransformer3D(**conf).load_state_dict(load_file(path))`."""
    file = tensor_file(path)
    if not is_kandinsky5_file(file):
        raise WeightsError(f"{file.path}: no {_MARKERS[0]} and {_MARKERS[1]} tensors: not a "
                           "Kandinsky 5 transformer file")
    prefix = prefix_of(file, "visual_transformer_blocks.")

    def shape(key: str) -> tuple[int, ...]:
        return tuple(file.shape(key_of(file, prefix, key, _WHAT)))

    model_dim, in_text_dim = shape("text_embeddings.in_layer.weight")
    time_dim, in_text_dim2 = shape("pooled_text_embeddings.in_layer.weight")
    visual_width = shape("visual_embeddings.in_layer.weight")[1] // 4
    out_width = shape("out_layer.out_layer.weight")[0] // 4
    if visual_width != out_width:
        raise WeightsError(f"{file.path}: a Kandinsky 5 transformer with a visual condition "
                           f"({visual_width} latent channels in, {out_width} out): a video "
                           "(T2V, I2V) or image-editing (I2I) model, which this text-to-image "
                           "pipeline does not run; use the text-to-image transformer "
                           "(kandinsky5lite_t2i.safetensors)")
    head_dim = shape("visual_transformer_blocks.0.self_attention.query_norm.weight")[0]
    derived = {
        "_class_name": "Kandinsky5Transformer3DModel", "in_visual_dim": visual_width,
        "out_visual_dim": out_width, "in_text_dim": in_text_dim, "in_text_dim2": in_text_dim2,
        "time_dim": time_dim, "model_dim": model_dim, "patch_size": _PATCH,
        "ff_dim": shape("visual_transformer_blocks.0.feed_forward.in_layer.weight")[0],
        "num_text_blocks": block_count(file, prefix, "text_transformer_blocks."),
        "num_visual_blocks": block_count(file, prefix, "visual_transformer_blocks."),
        "visual_cond": False}
    given = dict(config or {})
    axes = given.get("axes_dims")
    if axes is None or sum(axes) != head_dim:
        axes = (head_dim // 4, head_dim * 3 // 8, head_dim * 3 // 8)
    merged = {**given, **derived, "axes_dims": tuple(axes)}
    refs = {name[len(prefix):]: TensorRef(file, name, file.shape(name))
            for name in file.keys() if name.startswith(prefix)}
    return ComponentWeights("transformer", merged, refs, dtype=resolve_dtype(dtype))
