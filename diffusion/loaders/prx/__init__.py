"""PRX models (Photoroom): diffusers folders (`PRXPipeline`: transformer/
PRXTransformer2DModel, text_encoder/ T5Gemma's encoder, tokenizer/ Gemma's, vae/ FLUX.1's
AutoencoderKL, scheduler/). Builds on formats/."""

from .folder import PRXWeights, load_prx_folder, prx_family

__all__ = ["PRXWeights", "load_prx_folder", "prx_family"]
