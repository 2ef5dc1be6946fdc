"""A tiny random LTX-2 audio-video transformer built in-process (diffusers'
LTX2VideoTransformer3DModel), the reference for models.ltx2 and for pipeline tests (written
as a `transformer/` folder by diffusers' own save_pretrained)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import randomized

# video: 2 heads of 10 (a width of 20: 3 frequencies on each of 3 axes, 2 features left
# unrotated); audio: 2 heads of 6 (6 frequencies on its one axis); both texts 20 wide
LTX2_TINY: dict[str, Any] = dict(
    in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=10,
    cross_attention_dim=20, audio_in_channels=6, audio_out_channels=6,
    audio_num_attention_heads=2, audio_attention_head_dim=6, audio_cross_attention_dim=12,
    num_layers=2, caption_channels=20)

# LTX-2.3's parts on top: gated attention, the text query and key/value modulations, no
# caption projection (its connectors project the text to each stream's width), STG-able
# self-attention, no feed-forward biases, "split" rotations; LTX-2.5's keyframe embedding
LTX23_TINY: dict[str, Any] = dict(
    gated_attn=True, audio_gated_attn=True, cross_attn_mod=True, audio_cross_attn_mod=True,
    use_prompt_embeddings=False, perturbed_attn=True, ff_bias=False, audio_ff_bias=False,
    rope_type="split", cross_attention_dim=20, audio_cross_attention_dim=12,
    use_keyframes_abs_pos_embedding=True)


def tiny_ltx2_transformer(seed: int = 23, **overrides: Any) -> Any:
    """diffusers' LTX2VideoTransformer3DModel of LTX2_TINY (with `overrides`) with random
    weights (its modulation tables too), scaled so the text, the timestep and each stream's
    attention to the other visibly matter."""
    import diffusers
    import torch

    model = randomized(diffusers.LTX2VideoTransformer3DModel(**{**LTX2_TINY, **overrides}),
                       seed, scale=0.3)
    with torch.no_grad():
        for block in model.transformer_blocks:
            # audio queries over 105 video tokens of noise average them nearly away: sharper
            # queries and a wider gate let a new video move the audio's velocity by 7-11%
            block.video_to_audio_attn.norm_q.weight.mul_(5.0)
            block.audio_a2v_cross_attn_scale_shift_table[4].add_(2.0)
    return model


def write_ltx2_transformer(folder: Path, seed: int = 23, **overrides: Any) -> Any:
    """tiny_ltx2_transformer's model saved by diffusers into `folder` (a pipeline folder's
    `transformer/`); returns the model."""
    model = tiny_ltx2_transformer(seed, **overrides)
    model.save_pretrained(folder)
    return model
