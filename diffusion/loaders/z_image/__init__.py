"""Z-Image models: diffusers folders (`ZImagePipeline`: transformer/, text_encoder/ Qwen3,
tokenizer/, vae/ FLUX's 16-channel VAE, scheduler/). Builds on formats/; imports neither sd/
nor flow/."""

from .folder import ZImageWeights, load_zimage_folder, zimage_family

__all__ = ["ZImageWeights", "load_zimage_folder", "zimage_family"]
