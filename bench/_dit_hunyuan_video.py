"""HunyuanVideo (1.0)'s row of bench/dit_families.py: its transformer's step for a 960 x 544
video of 61 frames (16 x 68 x 120 latents of 16 channels in 1 x 2 x 2 patches: 16 x 34 x 60 =
32 640 video tokens), text to video, for a prompt of 60 real tokens in the pipeline's
256-token llava-llama-3 block (after the template's crop_start 95 tokens, masked as
HunyuanVideoPipeline passes it), CLIP's pooled prompt and the distilled guidance 6 x 1000.
BENCH_HV1_FRAMES sets the frame count (1 + 4k; 61 by default).

As each side's pipeline runs it: diffusers hands the padded block with its mask, and every
step refines and projects it and runs the blocks over 256 + 32 640 tokens, the padding
masked; ours drops the padding before the first projection and runs over 60 text tokens (a
masked key that no query reads: the same output, rel_err). Ours gathers and projects the
kept tokens once a run (`prepare_text`, timed once beside the step: prefix_ms), and each
step uploads the latents in the model's dtype and reads them, CLIP's pooled states from the
host, as our pipeline's loop calls the transformer.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

import gpustd

from ._dit_models import HUNYUANVIDEO, Model

NAMES = ("hunyuanvideo",)
BLOCK = 256  # HunyuanVideoPipeline's max_sequence_length: the block after the crop
REAL = 60  # a typical prompt's tokens
# guidance_scale 6.0 x 1000 as the pipeline holds it in bf16 (6016); float16 holds it exactly,
# so both sides read the same value
GUIDANCE = 6016.0


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of the row (a numpy array each): the noise, the text block and its mask
    (the real tokens first, as the tokenizer pads on the right), CLIP's pooled states."""
    rng = np.random.default_rng(0)
    frames = int(os.environ.get("BENCH_HV1_FRAMES", "61"))
    grid = (2, 6, 10) if quick else (1 + (frames - 1) // 4, 68, 120)
    block, real = (24, 9) if quick else (BLOCK, REAL)
    mask = np.zeros((1, block), bool)
    mask[0, :real] = True
    return {"latents": rng.standard_normal((1, config["in_channels"], *grid)),
            "text": rng.standard_normal((1, block, config["text_embed_dim"])), "mask": mask,
            "pooled": rng.standard_normal((1, config["pooled_projection_dim"])),
            # exact in bf16 and float16: each side rounds them to its dtype
            "t": np.array([500.0]), "guidance": np.array([GUIDANCE]),
            "rows": np.array(grid[1])}


def model(name: str) -> Model:
    """The model table's line for the row."""
    from diffusion.models.hunyuan_video import HunyuanVideoTransformer3DModel

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        t = x["torch"]
        dtype = t["latents"].dtype  # the pipeline's casts of the timestep and guidance
        return ref(hidden_states=t["latents"], timestep=t["t"].to(dtype),
                   encoder_hidden_states=t["text"], encoder_attention_mask=t["mask"],
                   pooled_projections=t["pooled"], guidance=t["guidance"].to(dtype),
                   return_dict=False)[0]

    def prefix(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        return ours.prepare_text(x["text"], x["mask"])

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        latents = gpustd.asarray(x["latents"], dtype=dtype, device=ours.device)
        return ours(latents, x["t"], x["prefix"], None, x["pooled"], x["guidance"])

    return Model(HUNYUANVIDEO, lambda d, t, c: d.HunyuanVideoTransformer3DModel(**c), ref_call,
                 lambda c, dt, dev: HunyuanVideoTransformer3DModel(c, dtype=dt, device=dev),
                 call, ours_prefix=prefix)
