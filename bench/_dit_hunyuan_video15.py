"""HunyuanVideo 1.5's row of bench/dit_families.py: its transformer's step for a 480p video
of 121 frames (848 x 480 pixels: 31 x 30 x 53 latents of 32 channels with their condition
channels, 49 290 video tokens), text-to-video, for a prompt of 128 real tokens in the
pipeline's 1000-token Qwen2.5-VL block and a 16-byte glyph text in ByT5's 256-token block.
BENCH_HV15_FRAMES sets the frame count (1 + 4k; 121 by default).

As each side's pipeline runs it: diffusers hands both padded blocks with their masks and the
all-zero SigLIP states of text-to-video, every step refines and projects them and runs the
blocks over 1000 + 256 + 729 text tokens, the padding and image tokens masked; ours drops the
masked tokens before the first projection and runs over 144 text tokens (a masked key that no
query reads: the same output, rel_err). Ours makes the prompt's part once a run
(`prepare_text`: the kept tokens gathered and projected for the refiner, the glyph tokens
projected; timed once beside the step, prefix_ms), and the step reads it, as
HunyuanVideo15Pipeline's loop calls the transformer.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._dit_models import HUNYUANVIDEO15, Model

NAMES = ("hunyuanvideo15",)
BLOCK, GLYPH_BLOCK, IMAGE = 1000, 256, 729  # the pipeline's text, glyph and SigLIP lengths
REAL, GLYPH = 128, 16  # a prompt's tokens after the template's dropped prefix; a quoted text


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of the row (a numpy array each): the noise, the empty condition (zeros,
    a zero mask: text-to-video) and both text blocks with their masks (the real tokens
    first, as the tokenizers pad), SigLIP's zero states."""
    rng = np.random.default_rng(0)
    frames = int(os.environ.get("BENCH_HV15_FRAMES", "121"))
    grid = (2, 3, 5) if quick else (1 + (frames - 1) // 4, 30, 53)
    block, real, glyph_block, glyph, image = (24, 9, 8, 3, 4) if quick else (
        BLOCK, REAL, GLYPH_BLOCK, GLYPH, IMAGE)
    channels = config["out_channels"]
    latents = np.zeros((1, config["in_channels"], *grid))
    latents[:, :channels] = rng.standard_normal((1, channels, *grid))
    mask = np.zeros((1, block), bool)
    mask[0, :real] = True
    glyph_mask = np.zeros((1, glyph_block), bool)
    glyph_mask[0, :glyph] = True
    return {"latents": latents,
            "text": rng.standard_normal((1, block, config["text_embed_dim"])), "mask": mask,
            "glyph": rng.standard_normal((1, glyph_block, config["text_embed_2_dim"])),
            "glyph_mask": glyph_mask, "image": np.zeros((1, image, config["image_embed_dim"])),
            # exact in bf16 and float16: each side rounds the timestep to its dtype
            "t": np.array([500.0]), "rows": np.array(grid[1])}


def model(name: str) -> Model:
    """The model table's line for the row."""
    from diffusion.models.hunyuan_video15 import HunyuanVideo15Transformer3DModel

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        t = x["torch"]
        return ref(hidden_states=t["latents"], encoder_hidden_states=t["text"],
                   timestep=t["t"].to(t["latents"].dtype),  # as the pipeline casts it
                   encoder_attention_mask=t["mask"], encoder_hidden_states_2=t["glyph"],
                   encoder_attention_mask_2=t["glyph_mask"], image_embeds=t["image"],
                   return_dict=False)[0]

    def prefix(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        # the zero image states as the host array they are: ours tells text-to-video there
        return ours.prepare_text(x["text"], x["mask"], x["glyph"], x["glyph_mask"], x["image"])

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        return ours(x["latents"], x["t"], x["prefix"], None)

    return Model(HUNYUANVIDEO15, lambda d, t, c: d.HunyuanVideo15Transformer3DModel(**c),
                 ref_call,
                 lambda c, dt, dev: HunyuanVideo15Transformer3DModel(c, dtype=dt, device=dev),
                 call, ours_prefix=prefix)
