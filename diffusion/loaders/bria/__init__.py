"""Bria 3.2 models: diffusers folders (`BriaPipeline`: transformer/ BriaTransformer2DModel,
text_encoder/ T5-XXL, tokenizer/ T5's, vae/ AutoencoderKL, scheduler/). Builds on formats/."""

from .folder import BriaWeights, bria_family, load_bria_folder

__all__ = ["BriaWeights", "bria_family", "load_bria_folder"]
