"""Bria FIBO: diffusers folders of `BriaFiboPipeline` (transformer/ BriaFiboTransformer2DModel,
text_encoder/ SmolLM3, tokenizer/, vae/ Wan 2.2's AutoencoderKLWan, scheduler/). Builds on
formats/; imports neither sd/ nor flow/."""

from .folder import BriaFiboWeights, bria_fibo_family, load_bria_fibo_folder

__all__ = ["BriaFiboWeights", "bria_fibo_family", "load_bria_fibo_folder"]
