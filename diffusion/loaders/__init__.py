"""Stable Diffusion model loaders: diffusers folders and single-file LDM checkpoints.

    weights = load_pipeline_weights("v1-5-pruned-emaonly.safetensors", dtype="float16")
    weights.info                  # ModelInfo(family="sd1", inpainting=False, ...)
    weights.unet.config           # diffusers UNet2DConditionModel config dict
    for name in weights.unet:     # diffusers names: "down_blocks.0.resnets.0.conv1.weight", ...
        upload(name, weights.unet[name])   # read from disk now, dropped after the upload

Only file headers are read up front; each tensor is read when indexed and not kept, so loading
never holds two copies of the model in host memory. Pickle checkpoints are refused.
"""

from ._pipeline import load_pipeline_weights
from ._safetensors import SafetensorsFile
from ._vae import load_vae_weights
from ._weights import ComponentWeights, ModelInfo, PipelineWeights
from .errors import WeightsError

__all__ = [
    "ComponentWeights",
    "ModelInfo",
    "PipelineWeights",
    "SafetensorsFile",
    "WeightsError",
    "load_pipeline_weights",
    "load_vae_weights",
]
