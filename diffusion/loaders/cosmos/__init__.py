"""NVIDIA Cosmos Predict2 models: diffusers folders (`Cosmos2TextToImagePipeline`:
transformer/ CosmosTransformer3DModel, text_encoder/ T5, tokenizer/, vae/ Wan 2.1's video
VAE, scheduler/). Builds on formats/; imports neither sd/ nor flow/."""

from .folder import CosmosWeights, cosmos_family, load_cosmos_folder

__all__ = ["CosmosWeights", "cosmos_family", "load_cosmos_folder"]
