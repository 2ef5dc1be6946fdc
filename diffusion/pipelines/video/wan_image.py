"""What Wan reads of a picture it animates: the picture resized, its latents (the first frame
of Wan 2.2 TI2V 5B), the conditioning of Wan 2.1 I2V and Wan 2.2 A14B I2V (a mask and the
first frame's latents), and Wan 2.1 I2V's CLIP vision states. diffusers:
WanImageToVideoPipeline's `prepare_latents` and `encode_image`."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpustd import asarray

from ...models.clip_vision import CLIPVisionModelWithProjection, clip_pixels
from ...models.wan_vae import AutoencoderKLWan
from ..finite import check_encoded

__all__ = ["clip_image_states", "first_frame_latents", "i2v_condition", "resized_pixels"]


def resized_pixels(image: Any, height: int, width: int) -> np.ndarray:
    """`image` (a PIL image or (H, W, 3) uint8) resized to width x height with Lanczos,
    (H, W, 3) in [-1, 1]."""
    from PIL import Image

    picture = image if isinstance(image, Image.Image) else Image.fromarray(
        np.asarray(image, np.uint8))
    picture = picture.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(picture, np.float32) / 255 * 2 - 1


def _latents(vae: AutoencoderKLWan, video: np.ndarray) -> np.ndarray:
    """The normalized posterior means of `video` (1, 3, T, H, W) in [-1, 1]; VaeNonFiniteError
    where the encoder gave NaN or infinity."""
    mean, _ = vae.encode(asarray(video, dtype=vae.post_quant_conv.weight.dtype,
                                 device=vae.device))
    latents = vae.normalize(mean).numpy().astype(np.float32)
    check_encoded(latents, vae)  # (normalizing keeps NaN and infinity where they are)
    return latents


def first_frame_latents(vae: AutoencoderKLWan, image: Any, height: int, width: int
                        ) -> np.ndarray:
    """(1, C, 1, h, w) normalized latents of `image` resized to width x height: the VAE
    posterior's mean (`retrieve_latents(..., sample_mode="argmax")`)."""
    pixels = resized_pixels(image, height, width)
    return _latents(vae, pixels.transpose(2, 0, 1)[None, :, None])


def i2v_condition(vae: AutoencoderKLWan, image: Any, height: int, width: int,
                  num_frames: int) -> np.ndarray:
    """The image-to-video conditioning (1, T + C, F, h, w): the mask (1 on the first latent
    frame's T = temporal-factor channels, 0 after) and the normalized latents (posterior
    means) of `image` (resized to width x height) followed by num_frames - 1 zero frames."""
    video = np.zeros((1, 3, num_frames, height, width), np.float32)
    video[0, :, 0] = resized_pixels(image, height, width).transpose(2, 0, 1)
    latents = _latents(vae, video)
    mask = np.zeros((1, vae.temporal_factor, *latents.shape[2:]), np.float32)
    mask[:, :, 0] = 1
    return np.concatenate([mask, latents], axis=1)


def clip_image_states(encoder: CLIPVisionModelWithProjection, image: Any) -> np.ndarray:
    """The CLIP vision encoder's penultimate hidden states (1, 1 + patches, hidden) of
    `image` (short side resized to the encoder's size, centre cut)."""
    pixels = clip_pixels(image, encoder.image_size, device=encoder.device)
    return encoder.hidden_states(pixels, -2).numpy().astype(np.float32)
