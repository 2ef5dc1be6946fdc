"""A tiny random Wan 2.2 Animate transformer (diffusers' WanAnimateTransformer3DModel) built
in-process, and its transformer folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import randomized
from wan_tiny import WAN_TINY

# WAN_TINY's width (2 heads of 12), 4 blocks with face blocks after blocks 0 and 2; 4 latent
# channels (in_channels 2 * 4 + 4); CLIP states 20 wide; 16 x 16 face crops through two
# motion res blocks (16 -> 8 -> 4), 2 face heads
ANIMATE_TINY: dict[str, Any] = {
    **WAN_TINY, "in_channels": 12, "latent_channels": 4, "out_channels": 4, "num_layers": 4,
    "image_dim": 20, "added_kv_proj_dim": 24, "motion_encoder_size": 16,
    "motion_encoder_channel_sizes": {"16": 4, "8": 6, "4": 8}, "motion_style_dim": 10,
    "motion_dim": 5, "motion_encoder_dim": 12, "face_encoder_hidden_dim": 8,
    "face_encoder_num_heads": 2, "inject_face_latents_blocks": 2,
    "motion_encoder_batch_size": 4}
TEXT_TOKENS = 512  # diffusers' Wan attention splits the image tokens off the last 512


def tiny_animate_transformer(seed: int = 31) -> Any:
    """diffusers' WanAnimateTransformer3DModel of ANIMATE_TINY, random weights scaled so the
    text, the pose and the face visibly matter: the motion encoder's equalised-lr weights
    drawn N(0, 1), as StyleGAN initialises them (its scales divide by the fan-in), and its
    biases a fifth of randomized's (at 0.1 they carry most of the motion vector, and a new
    face moved the output 4 %, at 0.02 17 %), the face blocks' to_out 4 times randomized's
    (without, 8 %)."""
    import diffusers
    import torch

    model = randomized(diffusers.WanAnimateTransformer3DModel(**ANIMATE_TINY), seed, scale=0.3)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.motion_encoder.named_parameters():
            if name.endswith("weight"):
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.mul_(0.2)
        for adapter in model.face_adapter:  # the face blocks' output as large as a block's
            adapter.to_out.weight.mul_(4.0)
    return model


def tiny_animate_transformer_folder(path: Path, seed: int = 31) -> Any:
    """`tiny_animate_transformer(seed)` saved by diffusers' save_pretrained to `path` (a
    pipeline folder's `transformer/`); returns the model."""
    model = tiny_animate_transformer(seed)
    model.save_pretrained(path)
    return model
