"""FramePack (lllyasviel's image to video on HunyuanVideo): its transformer's diffusers
folder (lllyasviel/FramePackI2V_HY, FramePack_F1_I2V_HY_20250503: config.json naming
HunyuanVideoTransformer3DModelPacked, or diffusers' HunyuanVideoFramepackTransformer3DModel,
and the shards, diffusers' parameter names), and a whole `HunyuanVideoFramepackPipeline`
folder: HunyuanVideo's (folder.py: Llama, CLIP, their tokenizers, the VAE, the scheduler)
with that transformer, SigLIP's image_encoder/ (FLUX Redux's SiglipVisionModel) and
feature_extractor/ (its SiglipImageProcessor settings).

    weights = load_framepack_folder("FramePack")
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import (
    causal_lm_refs,
    pipeline_class,
    pipeline_index,
    read_json,
    weight_refs,
)
from ..formats.dit_folder import DIT_COMPONENTS, dit_weights
from ..redux_file import siglip_weights
from ..weights import ComponentWeights, TensorRef, resolve_dtype
from .folder import HunyuanVideoWeights
from .vae import load_hunyuan_video_vae

__all__ = ["FAMILY", "FRAMEPACK_CLASS", "FramepackWeights", "framepack_family",
           "load_framepack_folder", "load_framepack_transformer"]

FAMILY = "framepack"

FRAMEPACK_CLASS = "HunyuanVideoFramepackPipeline"
_CLASSES = ("HunyuanVideoFramepackTransformer3DModel", "HunyuanVideoTransformer3DModelPacked")
_COMPONENTS = (*DIT_COMPONENTS, "text_encoder_2", "tokenizer_2", "image_encoder",
               "feature_extractor")


@dataclass
class FramepackWeights(HunyuanVideoWeights):
    """A FramePack folder's lazy weights: HunyuanVideo's, SigLIP as `image_encoder` and its
    processor's settings."""

    image_encoder: ComponentWeights | None = None
    processor_config: dict[str, Any] = field(default_factory=dict)


def framepack_family(path: str | os.PathLike[str]) -> str | None:
    """"framepack" for a diffusers folder whose model_index.json names a
    HunyuanVideoFramepackPipeline, None for anything else."""
    return FAMILY if pipeline_class(Path(path)) == FRAMEPACK_CLASS else None


def load_framepack_transformer(path: str | os.PathLike[str], *, dtype: Any = None,
                               variant: str | None = None,
                               config: dict[str, Any] | None = None) -> ComponentWeights:
    """Lazy FramePack transformer weights of a diffusers `transformer/` folder (its config
    with the packing's fields) or of one .safetensors file (framepack_file; `config`: what
    the file cannot tell). diffusers:
    `HunyuanVideoFramepackTransformer3DModel.from_pretrained(folder)`."""
    root = Path(path)
    if root.is_file():
        from .framepack_file import load_framepack_file

        return load_framepack_file(root, dtype=dtype, config=config)
    stored = read_json(root / "config.json")
    if stored.get("_class_name") not in _CLASSES or not stored.get("has_clean_x_embedder"):
        raise WeightsError(f"{root / 'config.json'}: _class_name "
                           f"{stored.get('_class_name')!r} (has_clean_x_embedder "
                           f"{stored.get('has_clean_x_embedder')}) is not a FramePack "
                           "transformer; give lllyasviel's FramePackI2V_HY or F1 folder")
    refs, _where = weight_refs(root, "diffusion_pytorch_model", variant)
    return ComponentWeights("transformer", stored, refs, dtype=resolve_dtype(dtype))


def load_framepack_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                          variant: str | None = None,
                          transformer: str | os.PathLike[str] | None = None
                          ) -> FramepackWeights:
    """Lazy weights of the HunyuanVideoFramepackPipeline folder `path` (`dtype`, `variant`
    as load_hunyuan_video_folder's), `transformer` (a FramePack transformer file or folder)
    in place of its own (a file's rotary axes its transformer/config.json's, where there is
    one); WeightsError naming what is not there."""
    root = Path(path)
    pipeline_index(root, FRAMEPACK_CLASS, _COMPONENTS)
    for needed in (root / "tokenizer" / "tokenizer.json",
                   root / "feature_extractor" / "preprocessor_config.json"):
        if not needed.is_file():
            raise WeightsError(f"{needed}: required file is missing")

    def adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
              ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
        if name != "text_encoder":
            return config, refs
        refs = causal_lm_refs(refs)
        if config.get("model_type") != "llama" or "embed_tokens.weight" not in refs:
            raise WeightsError(f"{root / name}: not a LlamaModel (model_type "
                               f"{config.get('model_type')!r}); give LLaVA-Llama-3's "
                               "language model")
        return config, refs

    parts = dit_weights(root, dtype=dtype, variant=variant, skip=("transformer", "vae"),
                        adapt=adapt)
    own = root / "transformer" / "config.json"
    axes = {"rope_axes_dim": read_json(own).get("rope_axes_dim")} if own.is_file() else None
    parts["transformer"] = load_framepack_transformer(
        root / "transformer" if transformer is None else transformer, dtype=dtype,
        variant=variant, config=axes)
    parts["vae"] = load_hunyuan_video_vae(root / "vae", dtype=dtype, variant=variant)
    clip = root / "text_encoder_2"
    refs, _where = weight_refs(clip, "model", variant)
    refs = {key.removeprefix("text_model."): ref for key, ref in refs.items()}
    return FramepackWeights(
        scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
        tokenizer_dir=root / "tokenizer",
        text_encoder_2=ComponentWeights("text_encoder_2", read_json(clip / "config.json"),
                                        refs, dtype=resolve_dtype(dtype)),
        tokenizer_2_dir=root / "tokenizer_2",
        image_encoder=siglip_weights(root / "image_encoder", dtype=dtype, variant=variant),
        processor_config=read_json(root / "feature_extractor" / "preprocessor_config.json"),
        **parts)  # type: ignore[arg-type]
