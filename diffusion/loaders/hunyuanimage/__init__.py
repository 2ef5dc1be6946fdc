"""HunyuanImage 2.1 models: diffusers folders (`HunyuanImagePipeline`: the base and the
distilled checkpoints; `HunyuanImageRefinerPipeline`: the refiner), the transformer from a
folder's transformer/ or Tencent's original single file. Builds on formats/, keymaps/ and
qwen_image/'s Qwen readers; imports neither sd/ nor flow/."""

from .folder import (
    HunyuanImageWeights,
    hunyuanimage_distilled,
    hunyuanimage_family,
    load_hunyuanimage_folder,
)
from .refiner import (
    REFINER_FAMILY,
    hunyuanimage_refiner_family,
    load_hunyuanimage_refiner_folder,
)
from .transformer import is_hunyuanimage_file, load_hunyuanimage_transformer

__all__ = ["REFINER_FAMILY", "HunyuanImageWeights", "hunyuanimage_distilled",
           "hunyuanimage_family", "hunyuanimage_refiner_family", "is_hunyuanimage_file",
           "load_hunyuanimage_folder", "load_hunyuanimage_refiner_folder",
           "load_hunyuanimage_transformer"]
