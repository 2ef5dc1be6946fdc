"""Sana models (NVIDIA's linear-attention DiTs: Sana 1.0/1.5, Sana Sprint): diffusers folders
(folder.py: `SanaPipeline`, `SanaSprintPipeline`; video.py: SANA-Video's `SanaVideoPipeline`),
the transformer from a diffusers transformer/ folder or one original-layout file (NVIDIA's
.pth, or a .safetensors), and the VAE (vae.py: a diffusers folder's vae/ AutoencoderDC, or
mit-han-lab's original DC-AE file).
Builds on formats/ and keymaps/; imports neither sd/ nor flow/."""

from .folder import SanaWeights, load_sana_folder, sana_family
from .transformer import is_sana_file, load_sana_transformer, sana_file_family
from .vae import DC_AE_SANA_CONFIG, load_sana_vae
from .video import SanaVideoWeights, load_sana_video_folder, sana_video_family

__all__ = ["DC_AE_SANA_CONFIG", "SanaVideoWeights", "SanaWeights", "is_sana_file",
           "load_sana_folder", "load_sana_transformer", "load_sana_vae",
           "load_sana_video_folder", "sana_family", "sana_file_family", "sana_video_family"]
