"""Diffusers folders of HunyuanVideo 1.5: text to video (`HunyuanVideo15Pipeline`, the 480p
and 720p t2v checkpoints) and image to video (`HunyuanVideo15ImageToVideoPipeline`, the i2v
ones): transformer/ (HunyuanVideo15Transformer3DModel), vae/ (AutoencoderKLHunyuanVideo15),
text_encoder/ (transformers' Qwen2_5_VLTextModel: Qwen2.5-VL-7B's language model alone, its
tensors without a prefix; a whole Qwen2_5_VLForConditionalGeneration is read too, its vision
tower and `lm_head` left out), tokenizer/ (Qwen's), text_encoder_2/ (ByT5's T5EncoderModel,
the glyph encoder), tokenizer_2/ (ByT5Tokenizer's config), scheduler/
(FlowMatchEulerDiscreteScheduler, a constant shift) and guider/ (ClassifierFreeGuidance's
guider_config.json); image to video's also image_encoder/ (SigLIP's SiglipVisionModel) and
feature_extractor/ (SiglipImageProcessor's preprocessor_config.json).

    weights = load_hunyuan_video15_folder("HunyuanVideo-1.5-Diffusers-480p_t2v")
    weights.image_to_video, weights.guider, weights.transformer.config["target_size"]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json, weight_refs
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..qwen_image.folder import language_model_config, language_model_refs, qwen_tokenizer
from ..redux_file import siglip_weights
from ..weights import ComponentWeights, TensorRef, resolve_dtype
from .transformer import load_hunyuan_video15_transformer
from .vae import load_hunyuan_video15_vae

__all__ = ["HunyuanVideo15Weights", "hunyuan_video15_family", "hunyuan_video15_image_to_video",
           "load_hunyuan_video15_folder"]

FAMILY = "hunyuan-video-1.5"
_T2V, _I2V = "HunyuanVideo15Pipeline", "HunyuanVideo15ImageToVideoPipeline"
_COMPONENTS = (*DIT_COMPONENTS, "text_encoder_2", "tokenizer_2", "guider")
_I2V_COMPONENTS = (*_COMPONENTS, "image_encoder", "feature_extractor")


@dataclass
class HunyuanVideo15Weights(DiTWeights):
    """A HunyuanVideo 1.5 folder's lazy component weights (ByT5 as `text_encoder_2`, SigLIP
    as `image_encoder` for image to video, else None), its scheduler's and guider's configs,
    its tokenizers' folders and the SigLIP processor's settings (image to video)."""

    text_encoder_2: ComponentWeights | None = None
    tokenizer_2_dir: Path | None = None
    guider: dict[str, Any] | None = None
    image_encoder: ComponentWeights | None = None
    processor_config: dict[str, Any] | None = None

    @property
    def image_to_video(self) -> bool:
        return self.image_encoder is not None


def hunyuan_video15_family(path: str | os.PathLike[str]) -> str | None:
    """"hunyuan-video-1.5" for a diffusers folder whose model_index.json names a
    HunyuanVideo15Pipeline or a HunyuanVideo15ImageToVideoPipeline, None for anything else."""
    return FAMILY if pipeline_class(Path(path)) in (_T2V, _I2V) else None


def hunyuan_video15_image_to_video(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a HunyuanVideo15ImageToVideoPipeline folder (it animates a picture)."""
    return pipeline_class(Path(path)) == _I2V


def _text_refs(refs: dict[str, TensorRef]) -> dict[str, TensorRef]:
    """The language model's tensors under Qwen2's names: a Qwen2_5_VLTextModel's as they are
    (no prefix), a whole Qwen2.5-VL's through `language_model_refs`."""
    if "embed_tokens.weight" in refs:
        return {k: r for k, r in refs.items() if not k.startswith("lm_head.")}
    return language_model_refs(refs)


def load_hunyuan_video15_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                                variant: str | None = None) -> HunyuanVideo15Weights:
    """Lazy weights of the HunyuanVideo 1.5 diffusers folder `path` (text to video or image
    to video). `dtype`: None (as stored; bfloat16 read as float32), "float16" or "float32";
    `variant`: e.g. "fp16". WeightsError naming the file or folder when it is not a
    HunyuanVideo 1.5 pipeline or a part is missing."""
    root = Path(path)
    i2v = pipeline_class(root) == _I2V
    pipeline_index(root, _I2V if i2v else _T2V, _I2V_COMPONENTS if i2v else _COMPONENTS)

    def adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
              ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
        if name != "text_encoder":
            return config, refs
        text = _text_refs(refs)
        if "embed_tokens.weight" not in text:
            raise WeightsError(f"{root / name}: no embed_tokens.weight: not Qwen2.5-VL's "
                               "language model; give the folder's own text encoder")
        return language_model_config(config), text

    # the transformer and the VAE through their own loaders (a layout they do not read is
    # named there)
    parts = dit_weights(root, dtype=dtype, variant=variant, skip=("transformer", "vae"),
                        adapt=adapt)
    parts["transformer"] = load_hunyuan_video15_transformer(root / "transformer", dtype=dtype,
                                                            variant=variant)
    parts["vae"] = load_hunyuan_video15_vae(root / "vae", dtype=dtype, variant=variant)
    glyph_refs, _ = weight_refs(root / "text_encoder_2", "model", variant)
    glyph = ComponentWeights("text_encoder_2", read_json(root / "text_encoder_2" /
                                                         "config.json"),
                             glyph_refs, dtype=resolve_dtype(dtype))
    extra: dict[str, Any] = {}
    if i2v:
        extra["image_encoder"] = siglip_weights(root / "image_encoder", dtype=dtype,
                                                variant=variant)
        settings = root / "feature_extractor" / "preprocessor_config.json"
        extra["processor_config"] = read_json(settings)
    return HunyuanVideo15Weights(
        scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
        tokenizer_dir=qwen_tokenizer(root / "tokenizer"), text_encoder_2=glyph,
        tokenizer_2_dir=root / "tokenizer_2",
        guider=read_json(root / "guider" / "guider_config.json"),
        **parts, **extra)  # type: ignore[arg-type]
