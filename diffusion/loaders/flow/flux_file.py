"""Black Forest Labs' single-file FLUX transformers (`flux1-dev.safetensors`,
`flux1-schnell.safetensors`; under `model.diffusion_model.` in ComfyUI all-in-one files) to
diffusers' FluxTransformer2DModel names, read lazily.

The mapping is diffusers' `convert_flux_transformer_checkpoint_to_diffusers`
(loaders/single_file_utils.py): fused q/k/v matrices (`img_attn.qkv`, `txt_attn.qkv`) and the
single blocks' `linear1` (q, k, v and the MLP's input, stacked) are split by rows, which
`SafetensorsFile.read(rows=...)` reads without the rest; the final adaLN's (shift, scale)
halves are swapped into diffusers' (scale, shift). The config comes from the tensor shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.safetensors import SafetensorsFile
from ..keymaps.dit_keys import (
    BFL_DOUBLE,
    BFL_DOUBLE_QKV,
    BFL_SINGLE,
    BFL_SINGLE_SPLIT,
    PREFIX,
    SwappedHalvesWeights,
    block_count,
    key_of,
    prefix_of,
    split_rows,
)
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype

__all__ = ["BFL_RENAMES", "double_block_refs", "flux_file_config", "is_flux_file",
           "load_flux_file"]

BFL_RENAMES = {  # BFL -> diffusers, outside the blocks
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "txt_in": "context_embedder", "img_in": "x_embedder", "final_layer.linear": "proj_out",
}
# BFL's blocks (keymaps/dit_keys.py) with FLUX.1's modulation layers
_DOUBLE = {"img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear", **BFL_DOUBLE}
_SINGLE = {"modulation.lin": "norm.linear", **BFL_SINGLE}
_SWAPPED = "norm_out.linear"  # BFL's final_layer.adaLN_modulation.1, halves swapped


def is_flux_file(file: TensorFile) -> bool:
    """The file holds a BFL-layout FLUX.1 transformer (bare or under model.diffusion_model.;
    FLUX.2's, whose blocks share the names, has a single-stream modulation FLUX.1 lacks)."""
    keys = [key.removeprefix(PREFIX) for key in file.keys()]
    return (any(key.startswith("double_blocks.") for key in keys)
            and "single_stream_modulation.lin.weight" not in keys)


def _tensor(file: TensorFile, prefix: str, key: str) -> str:
    return key_of(file, prefix, key, "FLUX")


def double_block_refs(file: TensorFile, prefix: str, index: int,
                      dim: int) -> dict[str, TensorRef]:
    """Refs to BFL's `double_blocks.{index}` tensors under diffusers' `transformer_blocks`
    names (its fused q/k/v split by rows); `dim`: the model width."""
    refs: dict[str, TensorRef] = {}
    source_block, target_block = f"double_blocks.{index}.", f"transformer_blocks.{index}."
    for parameter in ("weight", "bias"):
        for source, targets in BFL_DOUBLE_QKV.items():
            fused = _tensor(file, prefix, f"{source_block}{source}.{parameter}")
            refs.update(split_rows(file, fused,
                                   tuple(f"{target_block}{t}.{parameter}" for t in targets),
                                   (dim,) * 3))
    for source, target in _DOUBLE.items():
        for parameter in (("",) if source.endswith("scale") else (".weight", ".bias")):
            name = _tensor(file, prefix, f"{source_block}{source}{parameter}")
            refs[f"{target_block}{target}{parameter}"] = TensorRef(file, name, file.shape(name))
    return refs


def _refs(file: SafetensorsFile, prefix: str, dim: int, doubles: int,
          singles: int) -> dict[str, TensorRef]:
    refs: dict[str, TensorRef] = {}

    def whole(source: str, target: str) -> None:
        name = _tensor(file, prefix, source)
        refs[target] = TensorRef(file, name, file.shape(name))

    def split(source: str, targets: tuple[str, ...], sizes: tuple[int, ...]) -> None:
        refs.update(split_rows(file, _tensor(file, prefix, source), targets, sizes))

    for parameter in ("weight", "bias"):
        for source, target in BFL_RENAMES.items():
            if source.startswith("guidance_in") and prefix + source + ".weight" not in file:
                continue  # schnell: no guidance embedder
            whole(f"{source}.{parameter}", f"{target}.{parameter}")
        whole(f"final_layer.adaLN_modulation.1.{parameter}", f"{_SWAPPED}.{parameter}")
        for i in range(singles):
            mlp = file.shape(_tensor(file, prefix, f"single_blocks.{i}.linear1.weight"))[0] \
                - 3 * dim
            split(f"single_blocks.{i}.linear1.{parameter}",
                  tuple(f"single_transformer_blocks.{i}.{t}.{parameter}" for t in BFL_SINGLE_SPLIT),
                  (dim, dim, dim, mlp))
    for i in range(doubles):
        refs.update(double_block_refs(file, prefix, i, dim))
    for i in range(singles):
        for source, target in _SINGLE.items():
            for parameter in (("",) if source.endswith("scale") else (".weight", ".bias")):
                whole(f"single_blocks.{i}.{source}{parameter}",
                      f"single_transformer_blocks.{i}.{target}{parameter}")
    return refs


def flux_file_config(file: TensorFile) -> dict[str, Any]:
    """FluxTransformer2DModel's config of a BFL-layout file (a SafetensorsFile, or a GGUFFile:
    city96's), read from the header's shapes alone: widths, block counts, `guidance_embeds`
    (dev), the head dim (the q-norm's size), FLUX.1's `axes_dims_rope` (16, 56, 56).
    WeightsError naming the file when it is no FLUX.1 transformer or lacks a tensor."""
    if not is_flux_file(file):
        raise WeightsError(f"{file.path}: no double_blocks.* tensors: not a BFL FLUX "
                           "transformer file")
    prefix = prefix_of(file, "double_blocks.")
    dim, in_channels = file.shape(_tensor(file, prefix, "img_in.weight"))
    out_channels = file.shape(_tensor(file, prefix, "final_layer.linear.weight"))[0]
    head_dim = file.shape(_tensor(file, prefix,
                                  "double_blocks.0.img_attn.norm.query_norm.scale"))[0]
    return {
        "_class_name": "FluxTransformer2DModel", "patch_size": 1, "in_channels": in_channels,
        "out_channels": None if out_channels == in_channels else out_channels,  # Fill: 384/64
        "num_layers": block_count(file, prefix, "double_blocks."),
        "num_single_layers": block_count(file, prefix, "single_blocks."),
        "attention_head_dim": head_dim, "num_attention_heads": dim // head_dim,
        "joint_attention_dim": file.shape(_tensor(file, prefix, "txt_in.weight"))[1],
        "pooled_projection_dim": file.shape(_tensor(file, prefix,
                                                    "vector_in.in_layer.weight"))[1],
        "guidance_embeds": prefix + "guidance_in.in_layer.weight" in file,
        "axes_dims_rope": (16, 56, 56),
    }


def load_flux_file(path: str | Path | SafetensorsFile, *, dtype: Any = None,
                   config: Mapping[str, Any] | None = None) -> ComponentWeights:
    """Lazy FluxTransformer2DModel weights (diffusers' names) of a BFL-layout file, with
    `.config` read from the shapes (`flux_file_config`) unless `config` overrides it (or any
    of it: a folder's `axes_dims_rope`). `dtype`: None (as stored, bf16 as float32),
    "float16" or "float32". diffusers: `FluxTransformer2DModel.from_single_file(path)`."""
    # an open file: a SafetensorsFile, or a GGUFFile (diffusion.loaders.flow.gguf)
    file = SafetensorsFile(path) if isinstance(path, (str, Path)) else path
    derived = flux_file_config(file)
    prefix = prefix_of(file, "double_blocks.")
    dim = file.shape(_tensor(file, prefix, "img_in.weight"))[0]
    refs = _refs(file, prefix, dim, derived["num_layers"], derived["num_single_layers"])
    return SwappedHalvesWeights("transformer", {**derived, **(config or {})}, refs,
                                swapped={f"{_SWAPPED}.weight", f"{_SWAPPED}.bias"},
                                dtype=resolve_dtype(dtype))
