"""ERNIE-Image models: diffusers folders (`ErnieImagePipeline`: transformer/
ErnieImageTransformer2DModel, text_encoder/ Mistral3Model, tokenizer/ Mistral's, vae/ FLUX.2's
AutoencoderKLFlux2, scheduler/; the prompt enhancer pe/ and pe_tokenizer/ are not read).
Builds on formats/ and flux2/'s Mistral3 reader."""

from .folder import ErnieImageWeights, ernie_image_family, load_ernie_image_folder

__all__ = ["ErnieImageWeights", "ernie_image_family", "load_ernie_image_folder"]
