"""NVIDIA Cosmos models: diffusers folders of Predict2 Text2Image
(`Cosmos2TextToImagePipeline`: transformer/ CosmosTransformer3DModel, text_encoder/ T5,
tokenizer/, vae/ Wan 2.1's video VAE, scheduler/) and of Predict2.5
(`Cosmos2_5_PredictBasePipeline`: Qwen2.5-VL in place of T5). Builds on formats/ and
qwen_image's language-model reading; imports neither sd/ nor flow/."""

from .folder import CosmosWeights, cosmos_family, load_cosmos25_folder, load_cosmos_folder

__all__ = ["CosmosWeights", "cosmos_family", "load_cosmos25_folder", "load_cosmos_folder"]
