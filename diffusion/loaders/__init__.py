"""Stable Diffusion model loaders: diffusers folders and single-file LDM checkpoints
(SD 1.x, SD 2.x, SD-Turbo, SDXL base / refiner / SDXL-Turbo).

    weights = load_pipeline_weights("v1-5-pruned-emaonly.safetensors", dtype="float16")
    weights.info                  # ModelInfo(family="sd1", inpainting=False, ...)
    weights.unet.config           # diffusers UNet2DConditionModel config dict
    for name in weights.unet:     # diffusers names: "down_blocks.0.resnets.0.conv1.weight", ...
        upload(name, weights.unet[name])   # read from disk now, dropped after the upload

SDXL (what a pipeline reads from PipelineWeights):
    info.family           "sd1" | "sd2" | "sdxl" | "sdxl-refiner"; info.turbo (SD-/SDXL-Turbo)
    text_encoder          CLIP ViT-L (None for the refiner)
    text_encoder_2        OpenCLIP bigG as CLIPTextModelWithProjection (config "architectures"
                          ["CLIPTextModelWithProjection"], tensor "text_projection.weight");
                          None for SD 1/2
    tokenizer_dir, tokenizer_2_dir   tokenizer folders (None for single files: the bundled
                          vocabulary; tokenizer 2 pads with "!", tokenizer 1 with <|endoftext|>)
    pipeline_config       model_index.json settings: force_zeros_for_empty_prompt,
                          requires_aesthetics_score (single files: diffusers' values)
    unet.config           addition_embed_type "text_time", addition_time_embed_dim,
                          projection_class_embeddings_input_dim, per-level
                          transformer_layers_per_block; vae.config scaling_factor 0.13025,
                          force_upcast True
    scheduler_config      the folder's, or diffusers' single-file choice (SDXL: Euler, leading;
                          Turbo: trailing, SDXL-Turbo Euler ancestral)
load_pipeline_weights(file, config=folder) takes a single file's configs from a diffusers folder.

Only file headers are read up front; each tensor is read when indexed and not kept, so loading
never holds two copies of the model in host memory. PyTorch files (.ckpt/.pt/.pth/.bin) are read
the same way (`TorchFile`) through a pickle reader that refuses every global outside the
tensor-rebuilding allowlist, so nothing in them runs.
"""

from ._pipeline import load_pipeline_weights
from ._safetensors import SafetensorsFile
from ._torch_file import TorchFile, open_weights_file
from ._vae import load_vae_weights
from ._weights import ComponentWeights, ModelInfo, PipelineWeights
from .errors import WeightsError

__all__ = [
    "ComponentWeights",
    "ModelInfo",
    "PipelineWeights",
    "SafetensorsFile",
    "TorchFile",
    "WeightsError",
    "load_pipeline_weights",
    "load_vae_weights",
    "open_weights_file",
]
