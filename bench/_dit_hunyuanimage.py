"""HunyuanImage 2.1's row of bench/dit_families.py: its transformer's step at 2048x2048 (its
native size: 64 x 64 latents of 64 channels, 1 x 1 patches) for a prompt of 128 real tokens
in HunyuanImagePipeline's 1000-token Qwen2.5-VL block and a 16-byte glyph text in ByT5's
128-token block.

As each side's pipeline runs it: diffusers hands both padded blocks with their masks, and
every step refines and projects them and runs the blocks over 1128 + 4096 tokens, the
padding masked; ours drops the padding before the first projection and runs over 144 + 4096
tokens (a masked key that no query reads: the same output, rel_err).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._dit_models import HUNYUANIMAGE, Model

NAMES = ("hunyuanimage",)
BLOCK, GLYPH_BLOCK = 1000, 128  # the pipeline's tokenizer_max_length, tokenizer_2_max_length
REAL, GLYPH = 128, 16  # a prompt's tokens after the template's dropped prefix; a quoted text


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of the row (a numpy array each; `rows` the latents' side): both text
    blocks and their masks (the real tokens first, as the tokenizers pad)."""
    rng = np.random.default_rng(0)
    side, block, real, glyph_block, glyph = (5, 24, 9, 8, 3) if quick else (
        64, BLOCK, REAL, GLYPH_BLOCK, GLYPH)
    mask = np.zeros((1, block), bool)
    mask[0, :real] = True
    glyph_mask = np.zeros((1, glyph_block), bool)
    glyph_mask[0, :glyph] = True
    return {"latents": rng.standard_normal((1, config["in_channels"], side, side)),
            "text": rng.standard_normal((1, block, config["text_embed_dim"])), "mask": mask,
            "glyph": rng.standard_normal((1, glyph_block, config["text_embed_2_dim"])),
            "glyph_mask": glyph_mask,
            # exact in bf16 and float16: each side rounds the timestep to its dtype
            "t": np.array([500.0]), "rows": np.array(side)}


def model(name: str) -> Model:
    """The model table's line for the row."""
    from diffusion.models.hunyuanimage import HunyuanImageTransformer2DModel

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        t = x["torch"]
        return ref(hidden_states=t["latents"], encoder_hidden_states=t["text"],
                   timestep=t["t"].to(t["latents"].dtype),  # as the pipeline casts it
                   encoder_attention_mask=t["mask"], encoder_hidden_states_2=t["glyph"],
                   encoder_attention_mask_2=t["glyph_mask"], return_dict=False)[0]

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        return ours(x["latents"], x["t"], x["text"], x["mask"],
                    encoder_hidden_states_2=x["glyph"], encoder_attention_mask_2=x["glyph_mask"])

    return Model(HUNYUANIMAGE, lambda d, t, c: d.HunyuanImageTransformer2DModel(**c), ref_call,
                 lambda c, dt, dev: HunyuanImageTransformer2DModel(c, dtype=dt, device=dev),
                 call)
