"""What the flow-matching pipelines (FLUX, diffusion.pipelines.flux; SD3, .sd3) share around
their own denoising loops: the call's checks, the starting noise and the decode."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import asarray

from ..noise.rng import RNG_SOURCES, make_generator

__all__ = ["check_call", "decode", "starting_noise"]


def check_call(prompt: str | Any, *, rng: str, output_type: str, steps: int) -> list[str]:
    """The prompts of a call (one or a list), after checking the settings every flow pipeline
    takes; ValueError naming the setting otherwise."""
    if rng not in RNG_SOURCES:
        raise ValueError(f"rng must be one of {RNG_SOURCES}, got {rng!r}")
    if output_type not in ("np", "latent"):
        raise ValueError(f"output_type must be 'np' or 'latent', got {output_type!r}")
    if steps < 1:
        raise ValueError(f"num_inference_steps must be at least 1, got {steps}")
    return [prompt] if isinstance(prompt, str) else list(prompt)


def starting_noise(latents: np.ndarray | None, shape: tuple[int, ...], *, rng: str,
                   seed: int) -> np.ndarray:
    """`latents` as float32 when given (checked against `shape`), else a standard normal draw
    of `shape` from `rng` seeded with `seed` (torch's CPU generator for "torch", as diffusers)."""
    if latents is None:
        latents = make_generator(rng, seed).standard_normal(shape)
    latents = np.asarray(latents, np.float32)
    if latents.shape != shape:
        raise ValueError(f"latents must have shape {shape}, got {latents.shape}")
    return latents


def decode(vae: Any, latents: np.ndarray, device: Device) -> np.ndarray:
    """Images (B, H, W, 3) in [0, 1] from transformer latents (B, C, h, w): out of the scaled,
    shifted latent space, through the VAE in its own dtype."""
    z = latents / np.float32(vae.scaling_factor) + np.float32(vae.shift_factor)
    images = vae.decode(asarray(z, dtype=vae.decoder.conv_in.weight.dtype, device=device))
    return np.clip(images.numpy().astype(np.float32) / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)
