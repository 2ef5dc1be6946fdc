"""Helios' image- and video-to-video starts (diffusers' HeliosPipeline with `image` or
`video`). A picture: its latent frame takes the place of the zeros ahead of every chunk (the
video's first frame), and the last latent frame of the picture held still for a chunk's length
stands as the history's newest frame. A video to continue: its first frame's latents ahead of
every chunk, and its last whole chunks' latents (each a chunk's frames encoded by itself) as
the history. Both drawn from the VAE's posterior and then noised a little, as diffusers draws
them from the seed's generator before the chunks' noise."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpustd import asarray

from ...imaging import to_unit_image

__all__ = ["image_history", "video_history"]

# HeliosPipeline's image_noise_sigma_min / _max and video_noise_sigma_min / _max
_IMAGE_SIGMAS = (0.111, 0.135)
_VIDEO_SIGMAS = (0.111, 0.135)


def _uniform(generator: Any, count: int = 1) -> np.ndarray:
    """`count` uniform draws in [0, 1), float32: torch.rand(count, generator=g), or numpy's."""
    draw = generator.rand(count) if hasattr(generator, "rand") else generator.random(count)
    return np.asarray(draw, np.float32)


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
    sigma = np.float32(_uniform(generator)[0] * (sigmas[1] - sigmas[0]) + sigmas[0])
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


def video_history(vae: Any, video: Any, height: int, width: int, chunk: int,
                  generator: Any) -> tuple[np.ndarray, np.ndarray]:
    """(the first frame's latent frame (1, C, 1, h, w), the last whole chunks' latents (1, C,
    n chunk, h, w)) of `video` (PIL frames or HxWx3 uint8 arrays, each resized to height x
    width, Lanczos), each chunk's latent frames noised by a sigma of its own. ValueError in one
    line for a video shorter than a chunk. diffusers: `prepare_video_latents` then
    `add_noise_to_video_latents`."""
    frames = (chunk - 1) * int(vae.temporal_factor) + 1
    if len(video) < frames:
        raise ValueError(f"the video to continue has {len(video)} frames; Helios reads whole "
                         f"chunks of {frames}: give at least {frames}")
    pixels = np.concatenate([to_unit_image(f, width, height)[:, :, None] for f in video],
                            axis=2)
    first = _posterior_sample(vae, pixels[:, :, :1], generator)
    count = len(video) // frames
    start = len(video) - count * frames
    chunks = [_posterior_sample(vae, pixels[:, :, start + i * frames:start + (i + 1) * frames],
                                generator) for i in range(count)]
    first = _noised(first, _IMAGE_SIGMAS, generator)
    noised = []
    for part in chunks:
        low, high = _VIDEO_SIGMAS
        sigmas = _uniform(generator, part.shape[2]) * np.float32(high - low) + np.float32(low)
        sigmas = sigmas.reshape(1, 1, -1, 1, 1)
        noise = generator.standard_normal(part.shape).astype(np.float32)
        noised.append(sigmas * noise + (1 - sigmas) * part)
    return first, np.concatenate(noised, axis=2)
