"""Tiny random control models for the interface tests (CLI, server, page): diffusers'
ControlNetModel of sd_tiny's UNet, saved as the folders a --controlnet-dir holds; IP-Adapters
for that UNet in h94's layout, and a tiny CLIP image encoder for them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sd_tiny import UNET_TINY, randomized

__all__ = ["CROSS_ATTENTIONS", "IP_CONTEXT", "IP_ENCODER", "IP_INNER", "circle", "h94_plain",
           "ip_layers", "normal", "tiny_controlnet", "write_controlnets", "write_image_encoder"]

_UNET_ONLY = ("up_block_types", "out_channels", "sample_size")


def tiny_controlnet(seed: int = 4) -> Any:
    """diffusers' ControlNetModel of the tiny UNet (its map at twice the latent size, the
    tiny VAE's factor), every weight random (no zero convs)."""
    import diffusers

    config = {k: v for k, v in UNET_TINY.items() if k not in _UNET_ONLY}
    config["conditioning_embedding_out_channels"] = (8, 16)
    return randomized(diffusers.ControlNetModel(**config), seed)


def write_controlnets(folder: Path, names: tuple[str, ...] = ("tiny_canny", "tiny_scribble")
                      ) -> Path:
    """`folder` holding one diffusers ControlNet folder per name (different weights)."""
    for seed, name in enumerate(names, start=12):
        tiny_controlnet(seed).save_pretrained(folder / name)
    return folder


def circle(height: int = 40, width: int = 48, seed: int = 0) -> np.ndarray:
    """A white disc on black with some noise: uint8 HxWx3, a picture with clear edges."""
    y, x = np.mgrid[0:height, 0:width]
    disc = (np.hypot(x - width * 0.4, y - height * 0.45) < min(height, width) / 3) * 220
    noise = np.random.default_rng(seed).integers(0, 30, (height, width))
    return np.repeat((disc + noise).astype(np.uint8)[:, :, None], 3, axis=2)


IP_ENCODER = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=3,
                  num_attention_heads=4, image_size=32, patch_size=8, projection_dim=24,
                  hidden_act="gelu")
# the tiny UNet's (sd_tiny.UNET_TINY) cross-attention layers in diffusers' order: two in
# down_blocks.1, three in up_blocks.0, one in the mid block; all 64 channels, context 32
CROSS_ATTENTIONS, IP_INNER, IP_CONTEXT = 6, 64, 32


def normal(rng: np.random.Generator, *shape: int, fan_in: int | None = None) -> np.ndarray:
    scale = 1.0 / np.sqrt(fan_in or shape[-1])
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def ip_layers(rng: np.random.Generator, context: int = IP_CONTEXT,
              layers: int = CROSS_ATTENTIONS) -> dict[str, np.ndarray]:
    out = {}
    for k in range(layers):
        for name in ("to_k_ip", "to_v_ip"):
            out[f"ip_adapter.{2 * k + 1}.{name}.weight"] = 2 * normal(rng, IP_INNER, context)
    return out


def h94_plain(seed: int, context: int = IP_CONTEXT, layers: int = CROSS_ATTENTIONS,
              embed_dim: int = IP_ENCODER["projection_dim"]) -> dict[str, np.ndarray]:
    """A plain IP-Adapter (ip-adapter_sd15's layout) reading `embed_dim`-wide embeddings."""
    rng = np.random.default_rng(seed)
    out = {"image_proj.proj.weight": normal(rng, 4 * context, embed_dim),
           "image_proj.proj.bias": normal(rng, 4 * context) * 0.1,
           "image_proj.norm.weight": 1 + normal(rng, context) * 0.1,
           "image_proj.norm.bias": normal(rng, context) * 0.1}
    return {**out, **ip_layers(rng, context, layers)}


def write_image_encoder(folder: Path, seed: int = 21, **overrides: Any) -> Any:
    """transformers' CLIPVisionModelWithProjection (IP_ENCODER, random) saved in `folder`;
    returns the model."""
    import transformers

    model = randomized(transformers.CLIPVisionModelWithProjection(
        transformers.CLIPVisionConfig(**{**IP_ENCODER, **overrides})), seed, scale=0.5)
    model.save_pretrained(folder)
    return model
