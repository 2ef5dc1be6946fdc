"""Stable Diffusion models on gpustd: CLIP text encoder, UNet, VAE.

Plain classes whose attribute paths equal the diffusers / transformers checkpoint keys, so
loading weights is a walk over names (`load_state_dict`); configs are the `config.json` dicts.

| module | what |
|---|---|
| `clip` | CLIP's text transformer (`CLIPTextModel`, with projection for SDXL) |
| `unet`, `unet_blocks` | `UNet2DConditionModel` (SD 1/2, SDXL) and its down/mid/up blocks |
| `vae` | `AutoencoderKL`: encode to and decode from latents |
| `tiled_vae` | the VAE over tiles, for images larger than memory allows at once |
| `controlnet` | `ControlNetModel`: the UNet's input half reading a control image |
| `t2i_adapter` | `T2IAdapter` (full, full XL, light): control image to down-block features |
| `layers` | the pieces the UNet and VAE share: attention, ResNet blocks, down- and upsampling |

A new network family (ControlNet, FLUX, SD3, ...) is a module of its own beside these.
"""

from .clip import CLIPTextModel
from .unet import UNet2DConditionModel
from .vae import AutoencoderKL

__all__ = ["AutoencoderKL", "CLIPTextModel", "UNet2DConditionModel"]
