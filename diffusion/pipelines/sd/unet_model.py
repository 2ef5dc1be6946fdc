"""What the UNet family's denoising (run_kdiffusion, run_scheduler) and its inputs (prepare)
need of a model, and nothing more: its latent space (`LatentCodec`: the VAE's scale, encode,
decode) and its guided UNet (`UNetParts`, which `StableDiffusion` and `StableDiffusionXL`
give): the loops never see the pipeline's other parts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ...noise.rng import TorchCPUGenerator

__all__ = ["Generator", "LatentCodec", "UNetParts"]

Generator = np.random.Generator | TorchCPUGenerator  # what `standard_normal` is drawn from


class LatentCodec(Protocol):
    """A model's latent space: pictures in, latents out, and back."""

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent along each side."""
        ...

    def encode_latents(self, pixels: np.ndarray, generator: Generator, vae: Any = None
                       ) -> np.ndarray:
        """A latent (1, C, h, w) drawn from the VAE's posterior for `pixels` (1, 3, H, W) in
        [-1, 1], scaled for the denoiser; by `vae` where given (a hires pass's)."""
        ...

    def decode_latents(self, latents: np.ndarray, vae: Any = None) -> list[np.ndarray]:
        """Pictures (H, W, 3) uint8 of `latents` (B, C, h, w); by `vae` where given."""
        ...

    @property
    def device(self) -> Any:
        """The gpucore Device its networks live on (the hires fix's model upscaler runs there:
        a server's worker's own)."""
        ...


@dataclass(frozen=True)
class UNetParts:
    """A UNet model as its loops use it (a LatentCodec too): the scheduler config, the
    latents' shape, its VAE's encode and decode, and `guided(r, steps, *, webui=True,
    discrete=None)`, the guided UNet of pass `r` (a prepare.Pass) whose prompt editing counts
    `steps` model evaluations (a GuidedUNet, or a refiner's HandOff; `webui`: the
    WebUI's prompt handling, else diffusers'). `StableDiffusion.unet_parts()` gives its own."""

    scheduler_config: dict[str, Any]
    is_sdxl: bool
    vae_scale_factor: int
    latent_channels: int
    is_inpainting_model: bool
    guided: Callable[..., Any]
    encode_latents: Callable[..., np.ndarray]  # LatentCodec.encode_latents
    decode_latents: Callable[..., list[np.ndarray]]  # LatentCodec.decode_latents
    device: Any = None  # LatentCodec.device (None: the default device)
