"""A tiny random HunyuanVideo 1.5 VAE (diffusers' AutoencoderKLHunyuanVideo15) built
in-process: four levels, 8x spatial and 4x temporal compression, so that the encoder has a
level that downsamples in space only, two in space and time and a last in neither (the
decoder the mirror), with channels that grow unevenly (8, 16, 16, 32) so that every
channel-shuffle sampler both repeats and averages channels in its shortcut."""

from __future__ import annotations

from typing import Any

from sd_tiny import randomized

HUNYUAN_VIDEO15_VAE_TINY: dict[str, Any] = dict(
    latent_channels=4, block_out_channels=(8, 16, 16, 32), layers_per_block=1,
    spatial_compression_ratio=8, temporal_compression_ratio=4)


def tiny_hunyuan_video15_vae(seed: int = 13) -> Any:
    """diffusers' AutoencoderKLHunyuanVideo15 of HUNYUAN_VIDEO15_VAE_TINY, random, its RMS
    norms' gammas near 1 (randomized draws them as plain weights)."""
    import diffusers
    import torch

    model = randomized(diffusers.AutoencoderKLHunyuanVideo15(**HUNYUAN_VIDEO15_VAE_TINY), seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".gamma"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
    return model
