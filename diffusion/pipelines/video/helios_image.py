"""Helios' image-to-video start (diffusers' HeliosPipeline with `image`): the picture's latent
frame takes the place of the zeros ahead of every chunk (the video's first frame), and the
last latent frame of the picture held still for a chunk's length stands as the history's
newest frame, both drawn from the VAE's posterior and then noised a little, as diffusers
draws them from the seed's generator before the chunks' noise."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpustd import asarray

from ...imaging import to_unit_image

__all__ = ["image_history"]

# HeliosPipeline's image_noise_sigma_min / _max and video_noise_sigma_min / _max
_IMAGE_SIGMAS = (0.111, 0.135)
_VIDEO_SIGMAS = (0.111, 0.135)


def _uniform(generator: Any) -> float:
    """One uniform draw in [0, 1): torch.rand(1, generator=g), or numpy's."""
    draw = generator.rand(1) if hasattr(generator, "rand") else generator.random(1)
    return float(np.float32(draw[0]))


def _posterior_sample(vae: Any, pixels: np.ndarray, generator: Any) -> np.ndarray:
    """The VAE's normalised latents of `pixels` (B, 3, T, H, W) in [-1, 1], drawn from its
    posterior: mean + exp(logvar / 2) noise, logvar clamped to [-30, 20]. diffusers:
    `(vae.encode(x).latent_dist.sample(generator) - latents_mean) / latents_std`."""
    mean, logvar = vae.encode(asarray(pixels, dtype=vae.post_quant_conv.weight.dtype,
                                      device=vae.device))
    mean = mean.numpy().astype(np.float32)
    std = np.exp(0.5 * np.clip(logvar.numpy().astype(np.float32), -30.0, 20.0))
    noise = generator.standard_normal(mean.shape).astype(np.float32)
    drawn = asarray(mean + std * noise, dtype=vae.post_quant_conv.weight.dtype,
                    device=vae.device)
    return vae.normalize(drawn).numpy().astype(np.float32)  # type: ignore[no-any-return]


def _noised(latents: np.ndarray, sigmas: tuple[float, float], generator: Any) -> np.ndarray:
    """sigma noise + (1 - sigma) latents, sigma uniform in `sigmas`."""
    sigma = np.float32(_uniform(generator) * (sigmas[1] - sigmas[0]) + sigmas[0])
    noise = generator.standard_normal(latents.shape).astype(np.float32)
    return sigma * noise + (1 - sigma) * latents  # type: ignore[no-any-return]


def image_history(vae: Any, image: Any, height: int, width: int, chunk: int,
                  generator: Any) -> tuple[np.ndarray, np.ndarray]:
    """(the picture's latent frame, the still video's last latent frame), each (1, C, 1, h,
    w): `image` (PIL or HxWx3 uint8) resized to height x width (Lanczos); the still video has
    a chunk's frames. diffusers: `prepare_image_latents` then `add_noise_to_image_latents`."""
    pixels = to_unit_image(image, width, height)[:, :, None]
    first = _posterior_sample(vae, pixels, generator)
    frames = (chunk - 1) * int(vae.temporal_factor) + 1
    still = _posterior_sample(vae, np.repeat(pixels, frames, axis=2), generator)[:, :, -1:]
    return _noised(first, _IMAGE_SIGMAS, generator), _noised(still, _VIDEO_SIGMAS, generator)
