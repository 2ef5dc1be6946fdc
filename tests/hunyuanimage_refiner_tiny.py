"""Tiny random HunyuanImage 2.1 refiner parts built in-process (diffusers): its VAE
(AutoencoderKLHunyuanImageRefiner), its transformer (a HunyuanImageTransformer2DModel of 3D
patches over the condition latents stacked on the noisy ones, guidance-distilled) and the
whole HunyuanImageRefinerPipeline saved as a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import randomized

# HunyuanVideo 1.5's tiny VAE sizes: 8x, every sampler's shortcut both repeats and averages
REFINER_VAE_TINY: dict[str, Any] = dict(
    latent_channels=4, block_out_channels=(8, 16, 16, 32), layers_per_block=1,
    spatial_compression_ratio=8, temporal_compression_ratio=4, scaling_factor=1.25)
# the refiner's transformer: 2 x 4 VAE channels (a picture's latents twice, as two frames)
# to denoise, as many of the condition beside them; 1 x 1 x 1 patches; head dim 16 = the
# rotary axes 4 + 6 + 6 (frames, rows, columns); the guidance embedded, no ByT5 glyphs
REFINER_TINY: dict[str, Any] = dict(
    in_channels=16, out_channels=8, num_attention_heads=2, attention_head_dim=16,
    num_layers=2, num_single_layers=2, num_refiner_layers=2, mlp_ratio=4.0,
    patch_size=(1, 1, 1), text_embed_dim=40, text_embed_2_dim=None, rope_axes_dim=(4, 6, 6),
    guidance_embeds=True)


def tiny_refiner_vae(seed: int = 13) -> Any:
    """diffusers' AutoencoderKLHunyuanImageRefiner of REFINER_VAE_TINY, random, its RMS
    norms' gammas near 1."""
    import diffusers
    import torch

    model = randomized(diffusers.AutoencoderKLHunyuanImageRefiner(**REFINER_VAE_TINY), seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".gamma"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
    return model


def tiny_refiner_transformer(seed: int = 23) -> Any:
    """diffusers' HunyuanImageTransformer2DModel of REFINER_TINY, random."""
    import diffusers

    return randomized(diffusers.HunyuanImageTransformer2DModel(**REFINER_TINY), seed, scale=0.3)


def tiny_refiner_pipeline(root: Path) -> Any:
    """diffusers' HunyuanImageRefinerPipeline of tiny random parts saved to
    `root / "refiner"`; returns the pipeline."""
    import diffusers
    from qwenimage_tiny import tiny_qwen25vl
    from zimage_tiny import tiny_qwen_tokenizer, transformers_tokenizer

    pipe = diffusers.HunyuanImageRefinerPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=4.0),
        vae=tiny_refiner_vae(), text_encoder=tiny_qwen25vl(),
        tokenizer=transformers_tokenizer(tiny_qwen_tokenizer(root / "qwen-tokenizer")),
        transformer=tiny_refiner_transformer())
    pipe.save_pretrained(root / "refiner")
    return pipe
