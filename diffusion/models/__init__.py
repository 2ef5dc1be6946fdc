"""Stable Diffusion models on gpustd: CLIP text encoder, UNet, VAE.

Plain classes whose attribute paths equal the diffusers / transformers checkpoint keys, so
loading weights is a walk over names (`load_state_dict`); configs are the `config.json` dicts.
"""

from .clip import CLIPTextModel
from .unet import UNet2DConditionModel
from .vae import AutoencoderKL

__all__ = ["AutoencoderKL", "CLIPTextModel", "UNet2DConditionModel"]
