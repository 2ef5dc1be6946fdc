"""FLUX.1, SD3/3.5, Chroma and Wan single files (and city96's GGUFs of them) as the registry
and the refusals before a load read them: the tensor names their configs are read from, with
the shapes that say the config (flux_file_config, sd3_file_config, chroma_file_config,
load_wan_file's), each tensor tiny and zero,
so no model loads from them; and the diffusers folder (model_index.json, transformer/
config.json, no weights) of the same model, whose Capabilities the loaded pipeline's are
(tests/diffusion/pipelines/test_capabilities_before_load.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

_DIM, _HEAD = 8, 4  # a model width of two 4-wide heads


def flux_shapes(*, dev: bool = True, in_channels: int = 16, out_channels: int = 16,
                chroma: bool = False) -> dict[str, tuple[int, ...]]:
    """A BFL-layout FLUX.1 transformer's telling tensors (Chroma's: its approximator for the
    pooled text and guidance embedders): `in_channels` wider than `out_channels` is Canny /
    Depth dev (twice) or Fill (twice and 256 more)."""
    shapes = {"img_in.weight": (_DIM, in_channels), "txt_in.weight": (_DIM, 12),
              "final_layer.linear.weight": (out_channels, _DIM),
              "double_blocks.0.img_attn.qkv.weight": (3 * _DIM, _DIM),
              "double_blocks.0.img_attn.norm.query_norm.scale": (_HEAD,),
              "single_blocks.0.linear1.weight": (3 * _DIM + 16, _DIM)}
    if chroma:
        shapes["distilled_guidance_layer.in_proj.weight"] = (16, 6)
        shapes["distilled_guidance_layer.layers.0.in_layer.weight"] = (16, 16)
        return shapes
    shapes["vector_in.in_layer.weight"] = (_DIM, 6)
    if dev:
        shapes["guidance_in.in_layer.weight"] = (_DIM, 16)
    return shapes


def sd3_shapes() -> dict[str, tuple[int, ...]]:
    """A Stability-layout SD3 MMDiT's telling tensors (2x2 patches of 4 latent channels)."""
    return {"x_embedder.proj.weight": (_DIM, 4, 2, 2), "pos_embed": (1, 16, _DIM),
            "context_embedder.weight": (_DIM, 12), "y_embedder.mlp.0.weight": (_DIM, 6),
            "final_layer.linear.weight": (16, _DIM),
            "joint_blocks.0.x_block.attn.qkv.weight": (3 * _DIM, _DIM)}


def wan_shapes(*, in_channels: int = 16, out_channels: int = 16) -> dict[str, tuple[int, ...]]:
    """A Wan transformer's telling tensors (diffusers' names; one 128-wide head, 1x2x2
    patches): `in_channels` wider than `out_channels` is image-to-video's (the mask and the
    first frame's latents: 36 against 16)."""
    return {"patch_embedding.weight": (128, in_channels, 1, 2, 2),
            "proj_out.weight": (4 * out_channels, 128),
            "blocks.0.attn1.to_q.weight": (128, 128),
            "blocks.0.ffn.net.0.proj.weight": (256, 128),
            "condition_embedder.text_embedder.linear_1.weight": (128, 32),
            "condition_embedder.time_embedder.linear_1.weight": (128, 16)}


def write_header(path: Path, shapes: dict[str, tuple[int, ...]], *, prefix: str = "",
                 architecture: str = "flux") -> Path:
    """`shapes` as zero tensors in the safetensors file (names under `prefix`: ComfyUI's
    all-in-one layout) or, for a `.gguf` path, city96's GGUF (F16 / F32, bare names)."""
    tensors = {prefix + name: np.zeros(shape, np.float16) for name, shape in shapes.items()}
    if path.suffix == ".gguf":
        from diffusion.loaders.formats.gguf_write import write_gguf

        write_gguf(path, tensors.items(), "f16", architecture=architecture)
    else:
        from safetensors.numpy import save_file

        save_file(tensors, str(path))
    return path


def write_folder(path: Path, pipeline: str, transformer: dict[str, Any]) -> Path:
    """A diffusers folder of `pipeline` (model_index.json's _class_name) as the registry
    reads it before a load: its transformer/config.json, no weights."""
    (path / "transformer").mkdir(parents=True)
    (path / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    (path / "transformer" / "config.json").write_text(json.dumps(transformer))
    return path
