"""What Kandinsky 5's image-to-video model (diffusers' Kandinsky5I2VPipeline) does beside the
text-to-video loop (video/kandinsky5): the picture's latents as the first latent frame, held
there through the steps (its mask 1 in the transformer's condition), and the first frames'
statistics moved to the next ones' after the last step (the pipeline's "mesh artifacts" fix)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpustd import asarray

from ...imaging import to_unit_image
from ..finite import check_encoded

__all__ = ["FIRST_FRAMES", "first_frames_normalized", "picture_latents", "refuse_short"]

# the latent frames the fix renormalises, and how many after them it reads (diffusers' nFr and
# reference_frames); fewer latent frames than FIRST_FRAMES + 1 leave it nothing to read
FIRST_FRAMES, REFERENCE_FRAMES = 4, 5


def refuse_short(frames: int, temporal_factor: int = 4) -> None:
    """ValueError in one line for fewer frames than image-to-video needs: FIRST_FRAMES + 1
    latent frames (`temporal_factor` frames each after the first: HunyuanVideo's VAE, 4),
    else diffusers' first-frame fix has no frames to read (and gives NaN)."""
    least = FIRST_FRAMES * temporal_factor + 1
    if frames < least:
        raise ValueError(f"Kandinsky 5 image-to-video needs at least {least} frames, got "
                         f"{frames}")


def picture_latents(vae: Any, image: Any, width: int, height: int, generator: Any
                    ) -> np.ndarray:
    """The picture's first latent frame (1, 1, h, w, C), channels last: resized to width x
    height (Lanczos, as diffusers' VideoProcessor), HunyuanVideo's VAE posterior drawn from
    `generator` (after the video's noise, as diffusers draws it), times the scaling factor.
    diffusers: `Kandinsky5I2VPipeline.prepare_latents`' image latents."""
    pixels = to_unit_image(image, width, height)[:, :, None]  # (1, 3, 1, H, W)
    spatial = int(vae.spatial_compression_ratio)
    noise = generator.standard_normal(
        (1, int(vae.config["latent_channels"]), 1, height // spatial, width // spatial))
    weight = vae.post_quant_conv.weight
    z = vae.encode(asarray(pixels, dtype=weight.dtype, device=weight.device),
                   noise=noise.astype(np.float32)).numpy().astype(np.float32)
    check_encoded(z, vae)
    return (z * np.float32(vae.scaling_factor)).transpose(0, 2, 3, 4, 1)


def first_frames_normalized(latents: np.ndarray) -> np.ndarray:
    """`latents` (B, F, h, w, C) with the first FIRST_FRAMES latent frames of each video
    renormalised: their mean and std (per video) replaced by those of the next
    REFERENCE_FRAMES frames (over the batch), clamped to -0.05 / +0.1 of the mean and -0.1 /
    +0.25 of the std. diffusers: `Kandinsky5I2VPipeline.normalize_first_frame` (float64 here;
    torch's std is the unbiased one)."""
    if latents.shape[1] <= 1:
        return latents
    first = latents[:, :FIRST_FRAMES].astype(np.float64)
    reference = latents[:, FIRST_FRAMES:FIRST_FRAMES + min(REFERENCE_FRAMES,
                                                           latents.shape[1] - 1)]
    axes = (1, 2, 3, 4)
    mean = first.mean(axis=axes, keepdims=True)
    std = first.std(axis=axes, ddof=1, keepdims=True)
    target_mean = np.clip(reference.mean(dtype=np.float64), mean - 0.05, mean + 0.1)
    target_std = np.clip(reference.std(dtype=np.float64, ddof=1), std - 0.1, std + 0.25)
    out = latents.copy()
    out[:, :FIRST_FRAMES] = (first - mean) / std * target_std + target_mean
    return out
