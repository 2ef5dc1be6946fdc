"""Tiny random LTX-2 audio parts built in-process: diffusers' AutoencoderKLLTX2Audio (the
released layout: pixel norms, time-causal convs, 3 levels, 4x compression of time and mel
bins; 16 mel bins) and LTX2Vocoder (leaky ReLU, the released LTX-2's; and a SnakeBeta
anti-aliased one, the layout of LTX-2.3's bandwidth-extension vocoder)."""

from __future__ import annotations

from typing import Any

from sd_tiny import randomized

LTX2_AUDIO_VAE_TINY: dict[str, Any] = dict(
    base_channels=8, output_channels=2, ch_mult=(1, 2, 2), num_res_blocks=1, in_channels=2,
    latent_channels=2, norm_type="pixel", causality_axis="height", mel_bins=16)

LTX2_VOCODER_TINY: dict[str, Any] = dict(
    in_channels=2 * 16, hidden_channels=16, out_channels=2, upsample_kernel_sizes=[6, 4],
    upsample_factors=[3, 2], resnet_kernel_sizes=[3, 5], resnet_dilations=[[1, 3], [1, 2]],
    output_sampling_rate=24000)

LTX2_VOCODER_SNAKE_TINY: dict[str, Any] = dict(
    LTX2_VOCODER_TINY, act_fn="snakebeta", antialias=True, final_act_fn=None,
    final_bias=False)


def tiny_ltx2_audio_vae(seed: int = 21, **overrides: Any) -> Any:
    """diffusers' AutoencoderKLLTX2Audio of LTX2_AUDIO_VAE_TINY (and `overrides`), random,
    its latents' statistics too."""
    import diffusers
    import torch

    model = diffusers.AutoencoderKLLTX2Audio(**{**LTX2_AUDIO_VAE_TINY, **overrides})
    gen = torch.Generator().manual_seed(seed + 1)
    model.latents_mean.copy_(torch.randn(model.latents_mean.shape, generator=gen))
    model.latents_std.copy_(1 + torch.rand(model.latents_std.shape, generator=gen))
    return randomized(model, seed)


def tiny_ltx2_vocoder(seed: int = 22, **overrides: Any) -> Any:
    """diffusers' LTX2Vocoder of LTX2_VOCODER_TINY (and `overrides`), random."""
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    return randomized(LTX2Vocoder(**{**LTX2_VOCODER_TINY, **overrides}), seed)

LTX2_BWE_TINY: dict[str, Any] = dict(
    in_channels=2 * 16, hidden_channels=16, upsample_kernel_sizes=[8, 4],
    upsample_factors=[4, 2], resnet_kernel_sizes=[3, 5], resnet_dilations=[[1, 3], [1, 2]],
    bwe_in_channels=2 * 8, bwe_hidden_channels=16, bwe_upsample_kernel_sizes=[12, 8, 4],
    bwe_upsample_factors=[6, 4, 2], bwe_resnet_kernel_sizes=[3], bwe_resnet_dilations=[[1, 3]],
    filter_length=64, hop_length=16, window_length=64, num_mel_channels=8)


def tiny_ltx2_vocoder_bwe(seed: int = 23) -> Any:
    """diffusers' LTX2VocoderWithBWE of LTX2_BWE_TINY, random (output convs scaled down, so
    that few samples reach the final clamp), its STFT basis a Hann-windowed
    DFT's (cos, -sin rows) and its mel filterbank random non-negative (the checkpoint's hold
    both; diffusers leaves them zero)."""
    import numpy as np
    import torch
    from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE

    model = randomized(LTX2VocoderWithBWE(**LTX2_BWE_TINY), seed)
    length = LTX2_BWE_TINY["filter_length"]
    n, k = np.arange(length), np.arange(length // 2 + 1)[:, None]
    window = np.hanning(length + 1)[:-1]
    angle = 2 * np.pi * k * n / length
    basis = np.concatenate([np.cos(angle), -np.sin(angle)]) * window
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for generator in (model.vocoder, model.bwe_generator):  # most samples inside [-1, 1]
            generator.conv_out.weight.mul_(0.2)
        model.mel_stft.stft_fn.forward_basis.copy_(torch.from_numpy(basis[:, None]).float())
        model.mel_stft.mel_basis.copy_(torch.from_numpy(
            rng.uniform(0, 0.2, tuple(model.mel_stft.mel_basis.shape))).float())
    return model
