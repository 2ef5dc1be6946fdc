"""A tiny random HunyuanVideo VAE (diffusers' AutoencoderKLHunyuanVideo) built in-process:
four levels as the real one's, 4x spatial and 4x temporal compression so that one level
downsamples in space only, one in space and time, one in time only and the last in neither
(the real one's 8x spatial has no time-only level)."""

from __future__ import annotations

from typing import Any

from sd_tiny import randomized

HUNYUAN_VIDEO_VAE_TINY: dict[str, Any] = dict(
    latent_channels=4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
    norm_num_groups=4, spatial_compression_ratio=4, temporal_compression_ratio=4)


def tiny_hunyuan_video_vae(seed: int = 11) -> Any:
    """diffusers' AutoencoderKLHunyuanVideo of HUNYUAN_VIDEO_VAE_TINY, random."""
    import diffusers

    return randomized(diffusers.AutoencoderKLHunyuanVideo(**HUNYUAN_VIDEO_VAE_TINY), seed)
