"""Tiny random LTX-2 video VAEs (diffusers' AutoencoderKLLTX2Video) built in-process.

LTX2_VAE_TINY is the real one's shape, narrowed and on 2x2 patches rather than 4x4 (torch's
CPU conv3d makes the reference's time): four encoder levels downsampling in space, time,
then both twice (16x spatial, 8x temporal compression), a non-causal decoder of three
residual 2x2x2 up-samplers halving the channels, reflect padding.
LTX2_VAE_TINY_TIMESTEP is the variant whose decoder is timestep-conditioned and causal, with
an up-sampler of factor 1 without its residual and a strided-conv downsampler ("conv").
LTX2_VAE_TINY_WIDENING's decoder has up blocks of factor 1 that change their channels (a
conv_in residual block, its shortcut LayerNorm'd and through a 1x1x1 conv)."""

from __future__ import annotations

from typing import Any

from sd_tiny import randomized

LTX2_VAE_TINY: dict[str, Any] = dict(
    latent_channels=8, block_out_channels=(16, 16, 32, 32), layers_per_block=(1, 1, 1, 1, 1),
    decoder_block_out_channels=(16, 32, 64), decoder_layers_per_block=(1, 1, 1, 1),
    patch_size=2, spatial_compression_ratio=16, temporal_compression_ratio=8,
    decoder_causal=False)

LTX2_VAE_TINY_TIMESTEP: dict[str, Any] = dict(
    LTX2_VAE_TINY, block_out_channels=(16, 16, 16, 16),
    downsample_type=("spatial", "temporal", "conv", "spatiotemporal"),
    decoder_block_out_channels=(16, 16, 32), upsample_factor=(2, 1, 2),
    upsample_residual=(True, False, True), timestep_conditioning=True, decoder_causal=True)

LTX2_VAE_TINY_WIDENING: dict[str, Any] = dict(
    LTX2_VAE_TINY, decoder_block_out_channels=(8, 24, 32), upsample_factor=(1, 1, 2))


def tiny_ltx2_vae(seed: int = 13, **overrides: Any) -> Any:
    """diffusers' AutoencoderKLLTX2Video of LTX2_VAE_TINY (with `overrides`), random, its
    latents' statistics random too and its timestep multiplier diffusers' 1000."""
    import diffusers
    import torch

    model = randomized(diffusers.AutoencoderKLLTX2Video(**{**LTX2_VAE_TINY, **overrides}), seed)
    gen = torch.Generator().manual_seed(seed + 1)
    channels = model.config.latent_channels
    with torch.no_grad():
        model.latents_mean.copy_(torch.randn(channels, generator=gen))
        model.latents_std.copy_(0.5 + torch.rand(channels, generator=gen))
        if model.decoder.timestep_scale_multiplier is not None:
            model.decoder.timestep_scale_multiplier.fill_(1000.0)
    return model
