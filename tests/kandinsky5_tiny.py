"""A tiny random Kandinsky 5 transformer built in-process (diffusers), kept in memory as the
reference and written as a diffusers `transformer/` folder (config.json + safetensors by
diffusers' own save_pretrained) for pipeline tests to load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import CLIP_TINY, VAE_TINY, randomized

# 4 latent channels: the tiny FLUX-style VAE's (sd_tiny.VAE_TINY, as flow_tiny's FLUX uses);
# the text as the tiny Qwen2.5-VL's 40-wide hidden states (qwenimage_tiny), the pooled vector
# the tiny CLIP's 32; 2 heads of 16 = the rotary axes 4 + 6 + 6.
KANDINSKY5_TINY: dict[str, Any] = dict(
    in_visual_dim=VAE_TINY["latent_channels"], out_visual_dim=VAE_TINY["latent_channels"],
    in_text_dim=40, in_text_dim2=CLIP_TINY["hidden_size"], time_dim=24, patch_size=(1, 2, 2),
    model_dim=32, ff_dim=64, num_text_blocks=2, num_visual_blocks=2, axes_dims=(4, 6, 6),
    visual_cond=False, attention_type="regular")


def tiny_kandinsky5_transformer(seed: int = 17, **overrides: Any) -> Any:
    """diffusers' Kandinsky5Transformer3DModel of KANDINSKY5_TINY with random weights (its
    modulations too, which diffusers starts at zero), scaled so the text, the pooled vector
    and the timestep visibly matter."""
    import diffusers

    model = diffusers.Kandinsky5Transformer3DModel(**{**KANDINSKY5_TINY, **overrides})
    return randomized(model, seed, scale=0.3)


def write_kandinsky5_transformer(folder: Path, seed: int = 17, **overrides: Any) -> Any:
    """tiny_kandinsky5_transformer's model saved by diffusers into `folder` (a pipeline
    folder's `transformer/`: config.json and diffusion_pytorch_model.safetensors); returns the
    model."""
    model = tiny_kandinsky5_transformer(seed, **overrides)
    model.save_pretrained(folder)
    return model
