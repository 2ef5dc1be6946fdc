"""Diffusers folders of Wan 2.1 text-to-video (`WanPipeline`): transformer/
(WanTransformer3DModel), text_encoder/ (transformers' UMT5EncoderModel), tokenizer/ (UMT5's
tokenizer.json), vae/ (AutoencoderKLWan) and scheduler/ (UniPC on flow sigmas, or flow-match
Euler). A Wan 2.1 image-to-video folder (`WanImageToVideoPipeline`) adds image_encoder/
(transformers' CLIPVisionModel) and image_processor/ (its CLIPImageProcessor config).

Each component goes through the safetensors walk (`.fp16` variants, sharded
`.safetensors.index.json`) into lazy `ComponentWeights`; the models' own `load_state_dict`
checks the keys.

    weights = load_wan_folder("Wan2.1-T2V-1.3B-Diffusers")
    transformer = WanTransformer3DModel(weights.transformer.config)
    transformer.load_state_dict(weights.transformer)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json, weight_refs
from ..weights import ComponentWeights, resolve_dtype

__all__ = ["WanWeights", "load_wan_folder", "wan_family"]

_CLASS = "WanPipeline"
_I2V_CLASS = "WanImageToVideoPipeline"
_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
_STEMS = {"transformer": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model",
          "text_encoder": "model"}


@dataclass
class WanWeights:
    """A Wan folder's lazy component weights, its scheduler config and tokenizer folder;
    `expand_timesteps`: timesteps per token (Wan 2.2 TI2V 5B, which also animates a
    picture)."""

    transformer: ComponentWeights
    vae: ComponentWeights
    text_encoder: ComponentWeights
    scheduler_config: dict[str, Any]
    tokenizer_dir: Path
    expand_timesteps: bool = False
    image_encoder: ComponentWeights | None = None


def wan_family(path: str | os.PathLike[str]) -> str | None:
    """"wan" for a diffusers folder whose model_index.json names a WanPipeline or a
    WanImageToVideoPipeline, None for anything else."""
    return "wan" if pipeline_class(Path(path)) in (_CLASS, _I2V_CLASS) else None


def load_wan_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                    variant: str | None = None) -> WanWeights:
    """Lazy weights of the Wan diffusers folder `path`. `dtype`: None (as stored; bfloat16
    read as float32), "float16" or "float32"; `variant`: e.g. "fp16". WeightsError naming
    the file or folder when it is not a Wan text-to-video pipeline or a component is
    missing."""
    root = Path(path)
    i2v = pipeline_class(root) == _I2V_CLASS
    index = pipeline_index(root, _I2V_CLASS if i2v else _CLASS, _COMPONENTS)
    second = index.get("transformer_2")
    if isinstance(second, list) and second and second[0] is not None:
        raise WeightsError(f"{root / 'model_index.json'}: a Wan 2.2 A14B folder (two experts, "
                           "transformer_2) is not supported yet; use a Wan 2.1 folder")
    resolved = resolve_dtype(dtype)
    parts: dict[str, ComponentWeights] = {}
    for name in ("transformer", "vae", "text_encoder"):
        config = read_json(root / name / "config.json")
        refs, _where = weight_refs(root / name, _STEMS[name], variant)
        parts[name] = ComponentWeights(name, config, refs, dtype=resolved)
    image_encoder = index.get("image_encoder")
    if isinstance(image_encoder, list) and image_encoder and image_encoder[0] is not None:
        config = read_json(root / "image_encoder" / "config.json")
        refs, _where = weight_refs(root / "image_encoder", "model", variant)
        # transformers 5 saves a CLIPVisionModel's keys without the `vision_model.` prefix
        refs = {key if key.startswith("vision_model.") else f"vision_model.{key}": ref
                for key, ref in refs.items()}
        parts["image_encoder"] = ComponentWeights("image_encoder", config, refs,
                                                  dtype=resolved)
    tokenizer = root / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        raise WeightsError(f"{tokenizer / 'tokenizer.json'}: required file is missing (UMT5's "
                           "tokenizer the text encoder reads prompts with)")
    return WanWeights(scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
                      tokenizer_dir=tokenizer, expand_timesteps=bool(
                          index.get("expand_timesteps")), **parts)
