"""Tiny random Wan 2.1 components built in-process (diffusers, transformers): the video VAE,
the UMT5 text encoder, the transformer and a whole WanPipeline folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import randomized

# 8x spatial, 4x temporal as Wan 2.1's; 4 latent channels
WAN_VAE_TINY: dict[str, Any] = dict(
    base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
    temperal_downsample=[False, True, True],
    latents_mean=[0.3, -0.2, 0.1, 0.5], latents_std=[1.5, 0.8, 2.0, 1.1])


def tiny_wan_vae(seed: int = 5) -> Any:
    """diffusers' AutoencoderKLWan of WAN_VAE_TINY, random."""
    import diffusers

    return randomized(diffusers.AutoencoderKLWan(**WAN_VAE_TINY), seed)


def tiny_umt5(seed: int = 6) -> Any:
    """transformers' UMT5EncoderModel of T5_TINY's sizes (every block its own position bias
    table), random."""
    import transformers
    from flow_tiny import T5_TINY

    config = transformers.UMT5Config(**T5_TINY)
    return randomized(transformers.UMT5EncoderModel(config), seed)


WAN_TINY: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
    out_channels=4, text_dim=32, freq_dim=16, ffn_dim=40, num_layers=2, rope_max_seq_len=64)


def tiny_wan_transformer(seed: int = 7) -> Any:
    """diffusers' WanTransformer3DModel of WAN_TINY, random weights scaled so the text
    visibly matters."""
    import diffusers

    return randomized(diffusers.WanTransformer3DModel(**WAN_TINY), seed, scale=0.3)


# Wan 2.1 T2V's scheduler_config.json (UniPC on flow sigmas, 480p's shift)
WAN_SCHEDULER: dict[str, Any] = dict(
    prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
    num_train_timesteps=1000, solver_order=2)


def tiny_wan_pipeline(root: Path, *, wan22: bool = False) -> Any:
    """diffusers' WanPipeline of tiny random parts saved to `root / "wan"` (`wan22`: Wan 2.2
    TI2V 5B's layout, its VAE and per-token timesteps, to `root / "wan22"`); returns it."""
    import diffusers
    import transformers
    from flow_tiny import tiny_t5_tokenizer

    tiny_t5_tokenizer(root / "umt5-tokenizer")
    tokenizer = transformers.T5TokenizerFast(
        tokenizer_file=str(root / "umt5-tokenizer" / "tokenizer.json"))
    channels = WAN22_VAE_TINY["z_dim"] if wan22 else WAN_TINY["in_channels"]
    transformer = randomized(diffusers.WanTransformer3DModel(
        **{**WAN_TINY, "in_channels": channels, "out_channels": channels}), 7, scale=0.3)
    pipe = diffusers.WanPipeline(
        tokenizer=tokenizer, text_encoder=tiny_umt5(), transformer=transformer,
        vae=tiny_wan22_vae() if wan22 else tiny_wan_vae(),
        scheduler=diffusers.UniPCMultistepScheduler(**WAN_SCHEDULER), expand_timesteps=wan22)
    pipe.save_pretrained(root / ("wan22" if wan22 else "wan"))
    return pipe


# Wan 2.2 TI2V 5B's VAE shape: 2x2 patches, residual blocks, a wider decoder; 16x spatial
WAN22_VAE_TINY: dict[str, Any] = dict(
    base_dim=8, decoder_base_dim=12, z_dim=6, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
    temperal_downsample=[False, True, True], is_residual=True, patch_size=2, in_channels=12,
    out_channels=12, scale_factor_spatial=16,
    latents_mean=[0.3, -0.2, 0.1, 0.5, 0.0, -0.4], latents_std=[1.5, 0.8, 2.0, 1.1, 0.9, 1.3])


def tiny_wan22_vae(seed: int = 8) -> Any:
    """diffusers' AutoencoderKLWan of WAN22_VAE_TINY (Wan 2.2's layout), random."""
    import diffusers

    return randomized(diffusers.AutoencoderKLWan(**WAN22_VAE_TINY), seed)


# Wan 2.1 I2V's CLIP vision encoder (CLIPVisionModel, no projection), tiny: 2x2 patches + class
CLIP_VISION_TINY: dict[str, Any] = dict(
    hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
    image_size=28, patch_size=14, projection_dim=16)


def tiny_wan_i2v_pipeline(root: Path) -> Any:
    """diffusers' WanImageToVideoPipeline (Wan 2.1 I2V) of tiny random parts saved to
    `root / "wan-i2v"`: the transformer reads the noise, the 4-channel mask and the first
    frame's latents (4 + 4 + 4 channels) and the CLIP states; returns it."""
    import diffusers
    import transformers
    from flow_tiny import tiny_t5_tokenizer

    tiny_t5_tokenizer(root / "umt5-tokenizer")
    tokenizer = transformers.T5TokenizerFast(
        tokenizer_file=str(root / "umt5-tokenizer" / "tokenizer.json"))
    transformer = randomized(diffusers.WanTransformer3DModel(
        **{**WAN_TINY, "in_channels": 12, "image_dim": CLIP_VISION_TINY["hidden_size"],
           "added_kv_proj_dim": 24}), 11, scale=0.3)
    encoder = randomized(transformers.CLIPVisionModel(
        transformers.CLIPVisionConfig(**CLIP_VISION_TINY)), 12)
    processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    pipe = diffusers.WanImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=tiny_umt5(), transformer=transformer,
        vae=tiny_wan_vae(), scheduler=diffusers.UniPCMultistepScheduler(**WAN_SCHEDULER),
        image_encoder=encoder, image_processor=processor)
    pipe.save_pretrained(root / "wan-i2v")
    return pipe
