"""PixArt models (PixArt-α, PixArt-Σ: T5 DiTs over SD VAE latents): diffusers folders
(folder.py: `PixArtAlphaPipeline`, `PixArtSigmaPipeline`).
Builds on formats/; imports neither sd/ nor flow/."""

from .folder import PixArtWeights, load_pixart_folder, pixart_family

__all__ = ["PixArtWeights", "load_pixart_folder", "pixart_family"]
