"""HunyuanImage 2.1 models: diffusers folders (`HunyuanImagePipeline`: the base and the
distilled checkpoints). Builds on formats/ and qwen_image/'s Qwen readers; imports neither sd/
nor flow/."""

from .folder import (
    HunyuanImageWeights,
    hunyuanimage_distilled,
    hunyuanimage_family,
    load_hunyuanimage_folder,
)

__all__ = ["HunyuanImageWeights", "hunyuanimage_distilled", "hunyuanimage_family",
           "load_hunyuanimage_folder"]
