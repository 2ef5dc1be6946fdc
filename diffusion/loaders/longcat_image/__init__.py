"""LongCat-Image models: diffusers folders (`LongCatImagePipeline`: transformer/
LongCatImageTransformer2DModel, text_encoder/ Qwen2.5-VL-7B, tokenizer/ Qwen's, vae/ FLUX.1's
AutoencoderKL, scheduler/). Builds on formats/ and qwen_image/'s Qwen2.5-VL readers."""

from .folder import (
    LONGCAT_CLASSES,
    LongCatWeights,
    load_longcat_image_folder,
    longcat_image_family,
)

__all__ = ["LONGCAT_CLASSES", "LongCatWeights", "load_longcat_image_folder",
           "longcat_image_family"]
