"""Chroma's original single-file transformer (`chroma-unlocked-v50.safetensors`,
`Chroma1-HD.safetensors`; under `model.diffusion_model.` in ComfyUI's files) to diffusers'
ChromaTransformer2DModel names, read lazily.

The mapping is diffusers' `convert_chroma_transformer_checkpoint_to_diffusers`
(loaders/single_file_utils.py): BFL's FLUX block names without their modulation layers, the
fused q/k/v (`img_attn.qkv`, `txt_attn.qkv`) and the single blocks' `linear1` (q, k, v and
the MLP's input) split by rows, and the approximator `distilled_guidance_layer` (its
`in_layer` / `out_layer` / `norms.N.scale` renamed). The config comes from the tensor shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import WeightsError
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype
from .dit_keys import (
    BFL_DOUBLE,
    BFL_DOUBLE_QKV,
    BFL_SINGLE,
    BFL_SINGLE_SPLIT,
    block_count,
    key_of,
    prefix_of,
    split_rows,
)

__all__ = ["chroma_file_config", "chroma_file_weights", "is_chroma_file"]

_MARK = "distilled_guidance_layer.in_proj.weight"
_RENAMES = {"txt_in": "context_embedder", "img_in": "x_embedder",
            "final_layer.linear": "proj_out",
            "distilled_guidance_layer.in_proj": "distilled_guidance_layer.in_proj",
            "distilled_guidance_layer.out_proj": "distilled_guidance_layer.out_proj"}
_APPROXIMATOR = {"in_layer": "linear_1", "out_layer": "linear_2"}


def is_chroma_file(file: TensorFile) -> bool:
    """The file holds a Chroma transformer (its approximator), bare or under
    model.diffusion_model."""
    return any(key.endswith(_MARK) and key[:-len(_MARK)] in ("", "model.diffusion_model.")
               for key in file.keys())


def _refs(file: TensorFile, prefix: str, dim: int, doubles: int, singles: int,
          layers: int) -> dict[str, TensorRef]:
    refs: dict[str, TensorRef] = {}

    def whole(source: str, target: str) -> None:
        name = key_of(file, prefix, source, "Chroma")
        refs[target] = TensorRef(file, name, file.shape(name))

    def pairs(table: dict[str, str], source: str, target: str) -> None:
        for old, new in table.items():
            for parameter in (("",) if old.endswith("scale") else (".weight", ".bias")):
                whole(f"{source}{old}{parameter}", f"{target}{new}{parameter}")

    pairs(_RENAMES, "", "")
    for i in range(layers):
        pairs(_APPROXIMATOR, f"distilled_guidance_layer.layers.{i}.",
              f"distilled_guidance_layer.layers.{i}.")
        whole(f"distilled_guidance_layer.norms.{i}.scale",
              f"distilled_guidance_layer.norms.{i}.weight")
    for parameter in ("weight", "bias"):
        for i in range(doubles):
            for source, targets in BFL_DOUBLE_QKV.items():
                name = key_of(file, prefix, f"double_blocks.{i}.{source}.{parameter}", "Chroma")
                refs.update(split_rows(file, name, tuple(
                    f"transformer_blocks.{i}.{t}.{parameter}" for t in targets), (dim,) * 3))
        for i in range(singles):
            name = key_of(file, prefix, f"single_blocks.{i}.linear1.{parameter}", "Chroma")
            refs.update(split_rows(file, name, tuple(
                f"single_transformer_blocks.{i}.{t}.{parameter}" for t in BFL_SINGLE_SPLIT),
                (dim, dim, dim, file.shape(name)[0] - 3 * dim)))
    for i in range(doubles):
        pairs(BFL_DOUBLE, f"double_blocks.{i}.", f"transformer_blocks.{i}.")
    for i in range(singles):
        pairs(BFL_SINGLE, f"single_blocks.{i}.", f"single_transformer_blocks.{i}.")
    return refs


def chroma_file_config(file: TensorFile) -> dict[str, Any]:
    """ChromaTransformer2DModel's config of an original-layout file (a safetensors or a GGUF
    file), read from the header's shapes alone (the head dim is the q-norm's size,
    `axes_dims_rope` FLUX.1's). WeightsError naming the file when it is no Chroma transformer
    or lacks a tensor."""
    if not is_chroma_file(file):
        raise WeightsError(f"{file.path}: no {_MARK} tensor: not a Chroma transformer file")
    prefix = prefix_of(file, "distilled_guidance_layer.")
    dim, in_channels = file.shape(key_of(file, prefix, "img_in.weight", "Chroma"))
    head_dim = file.shape(key_of(file, prefix, "double_blocks.0.img_attn.norm.query_norm.scale",
                                 "Chroma"))[0]
    hidden, channels = file.shape(prefix + _MARK)
    return {
        "_class_name": "ChromaTransformer2DModel", "patch_size": 1, "in_channels": in_channels,
        "out_channels": None, "num_layers": block_count(file, prefix, "double_blocks."),
        "num_single_layers": block_count(file, prefix, "single_blocks."),
        "attention_head_dim": head_dim, "num_attention_heads": dim // head_dim,
        "joint_attention_dim": file.shape(key_of(file, prefix, "txt_in.weight", "Chroma"))[1],
        "axes_dims_rope": (16, 56, 56), "approximator_num_channels": channels,
        "approximator_hidden_dim": hidden,
        "approximator_layers": block_count(file, prefix, "distilled_guidance_layer.layers."),
    }


def chroma_file_weights(file: TensorFile, *, dtype: Any = None,
                        config: Mapping[str, Any] | None = None) -> ComponentWeights:
    """Lazy ChromaTransformer2DModel weights (diffusers' names) of an original-layout file (a
    safetensors or a GGUF file), with `.config` read from the shapes (`chroma_file_config`)
    unless `config` overrides it. `dtype`: None (as stored, bf16 as float32), "float16" or
    "float32". diffusers: `ChromaTransformer2DModel.from_single_file(path)`."""
    derived = chroma_file_config(file)
    prefix = prefix_of(file, "distilled_guidance_layer.")
    dim = file.shape(key_of(file, prefix, "img_in.weight", "Chroma"))[0]
    refs = _refs(file, prefix, dim, derived["num_layers"], derived["num_single_layers"],
                 derived["approximator_layers"])
    return ComponentWeights("transformer", {**derived, **(config or {})}, refs,
                            dtype=resolve_dtype(dtype))
