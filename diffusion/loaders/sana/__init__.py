"""Sana models (NVIDIA's linear-attention DiTs): the VAE (vae.py: a diffusers folder's vae/
AutoencoderDC, or mit-han-lab's original DC-AE file). Built on formats/."""

from .vae import DC_AE_SANA_CONFIG, load_sana_vae

__all__ = ["DC_AE_SANA_CONFIG", "load_sana_vae"]
