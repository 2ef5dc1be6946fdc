"""Tiny random Qwen-Image components built in-process (diffusers, transformers, tokenizers): a
Qwen-Image transformer, a Qwen-Image VAE, a Qwen2.5-VL text encoder and a whole
QwenImagePipeline folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import randomized
from zimage_tiny import QWEN3_TINY, tiny_qwen_tokenizer, transformers_tokenizer

QWENIMAGE_TINY: dict[str, Any] = dict(
    patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
    num_attention_heads=3, joint_attention_dim=40, axes_dims_rope=(4, 6, 6))


def tiny_qwenimage_transformer(seed: int = 7) -> Any:
    """diffusers' QwenImageTransformer2DModel of QWENIMAGE_TINY, random weights scaled so the
    text visibly matters."""
    import diffusers

    return randomized(diffusers.QwenImageTransformer2DModel(**QWENIMAGE_TINY), seed, scale=0.3)


QWENIMAGE_VAE_TINY: dict[str, Any] = dict(
    base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[False, True],
    latents_mean=[0.3, -0.2, 0.1, 0.5], latents_std=[1.5, 0.8, 2.0, 1.1])


def tiny_qwenimage_vae(seed: int = 5) -> Any:
    """diffusers' AutoencoderKLQwenImage of QWENIMAGE_VAE_TINY (4x downsampling), random."""
    import diffusers

    return randomized(diffusers.AutoencoderKLQwenImage(**QWENIMAGE_VAE_TINY), seed)


# Qwen-Image's scheduler_config.json (the dynamic shift by image size, stretched to 0.02)
QWENIMAGE_SCHEDULER: dict[str, Any] = dict(
    base_image_seq_len=256, base_shift=0.5, max_image_seq_len=8192, max_shift=0.9,
    num_train_timesteps=1000, shift=1.0, shift_terminal=0.02, time_shift_type="exponential",
    use_dynamic_shifting=True)


def tiny_qwen25vl(seed: int = 3) -> Any:
    """transformers' Qwen2_5_VLForConditionalGeneration: QWEN3_TINY's sizes (without q/k
    norms: Qwen2's layers) and a one-block vision tower no prompt uses."""
    import transformers

    text = {k: v for k, v in QWEN3_TINY.items() if k not in ("head_dim", "tie_word_embeddings")}
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6,
                               "mrope_section": [1, 2, 2]}
    vision = dict(depth=1, hidden_size=16, intermediate_size=24, num_heads=2,
                  out_hidden_size=QWEN3_TINY["hidden_size"], fullatt_block_indexes=[0])
    config = transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision)
    return randomized(transformers.Qwen2_5_VLForConditionalGeneration(config), seed)


def tiny_qwenimage_pipeline(root: Path) -> Any:
    """diffusers' QwenImagePipeline of tiny random parts saved to `root / "qwen-image"`;
    returns the pipeline."""
    import diffusers

    tokenizer = transformers_tokenizer(tiny_qwen_tokenizer(root / "qwen-tokenizer"))
    pipe = diffusers.QwenImagePipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**QWENIMAGE_SCHEDULER),
        vae=tiny_qwenimage_vae(), text_encoder=tiny_qwen25vl(), tokenizer=tokenizer,
        transformer=tiny_qwenimage_transformer())
    pipe.save_pretrained(root / "qwen-image")
    return pipe


def tiny_qwenimage_layered_pipeline(root: Path) -> Any:
    """diffusers' QwenImageLayeredPipeline of tiny random parts (the layered transformer: the
    RGBA timestep row, 3D rope; a 4-channel VAE; no processor: only diffusers' captioning
    reads it) saved to `root / "layered"`; returns the pipeline."""
    import diffusers

    # 8 latent channels: with 4, as many as the picture's, diffusers takes it for latents
    layered = dict(QWENIMAGE_TINY, in_channels=32, out_channels=8, use_additional_t_cond=True,
                   use_layer3d_rope=True)
    vae = dict(QWENIMAGE_VAE_TINY, z_dim=8, input_channels=4,
               latents_mean=[0.3, -0.2, 0.1, 0.5, -0.4, 0.2, 0.0, -0.1],
               latents_std=[1.5, 0.8, 2.0, 1.1, 0.9, 1.3, 1.7, 0.7])
    pipe = diffusers.QwenImageLayeredPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**QWENIMAGE_SCHEDULER),
        vae=randomized(diffusers.AutoencoderKLQwenImage(**vae), 5),
        text_encoder=tiny_qwen25vl(),
        tokenizer=transformers_tokenizer(tiny_qwen_tokenizer(root / "tokenizer")),
        processor=None,
        transformer=randomized(diffusers.QwenImageTransformer2DModel(**layered), 7, scale=0.3))
    pipe.save_pretrained(root / "layered")
    return pipe
