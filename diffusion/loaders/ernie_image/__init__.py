"""ERNIE-Image models: diffusers folders (`ErnieImagePipeline`: transformer/
ErnieImageTransformer2DModel, text_encoder/ Mistral3Model, tokenizer/ Mistral's, vae/ FLUX.2's
AutoencoderKLFlux2, scheduler/; the prompt enhancer pe/ and pe_tokenizer/ are not read), and
single-file transformers (ComfyUI's, GGUFs) that run with such a folder as their base.
Builds on formats/ and flux2/'s Mistral3 reader."""

from .file import ernie_image_file_family, is_ernie_image_file, load_ernie_image_file
from .folder import ErnieImageWeights, ernie_image_family, load_ernie_image_folder

__all__ = ["ErnieImageWeights", "ernie_image_family", "ernie_image_file_family",
           "is_ernie_image_file", "load_ernie_image_file", "load_ernie_image_folder"]
