"""PixArt models (PixArt-α, PixArt-Σ: T5 DiTs over SD VAE latents): diffusers folders
(folder.py: `PixArtAlphaPipeline`, `PixArtSigmaPipeline`) and the transformer as one
original-layout file (transformer.py: the PixArt repositories' .pth, or a .safetensors).
Builds on formats/ and keymaps/; imports neither sd/ nor flow/."""

from .folder import PixArtWeights, load_pixart_folder, pixart_family
from .transformer import is_pixart_file, load_pixart_transformer, pixart_file_family

__all__ = ["PixArtWeights", "is_pixart_file", "load_pixart_folder", "load_pixart_transformer",
           "pixart_family", "pixart_file_family"]
