"""Z-Image models: diffusers folders (`ZImagePipeline`: transformer/, text_encoder/ Qwen3,
tokenizer/, vae/ FLUX's 16-channel VAE, scheduler/; `ZImageOmniPipeline` with siglip/ too)
and single-file transformers in the original layout (ComfyUI's, fine-tunes', GGUFs of them)
and its Qwen3 text encoder as one file (ComfyUI's). Builds on formats/ and keymaps/; imports
neither sd/ nor flow/."""

from .file import is_zimage_file, load_zimage_file, zimage_file_family
from .folder import ZImageWeights, load_zimage_folder, zimage_family, zimage_omni_family
from .text_encoder_file import is_llm_file, load_llm_file

__all__ = ["ZImageWeights", "is_llm_file", "is_zimage_file", "load_llm_file",
           "load_zimage_file", "load_zimage_folder", "zimage_family", "zimage_file_family",
           "zimage_omni_family"]
