"""PixArt-Σ XL/2 1024's row of bench/dit_families.py: its transformer's step at 1024x1024 (SD
VAE latents 128 x 128 of 4 channels in 2 x 2 patches: 4096 tokens, sin-cos positions at
interpolation scale 2) for a prompt in PixArtSigmaPipeline's 300-token T5 block: 40 real
tokens, the rest masked.

As each side's model runs it: diffusers' cross-attention reads the whole 300-token block with
its -10000 bias every step; ours trims the padding past the last kept token (a masked key
that no query reads: the same output, rel_err). Both sides take the latents and T5's states
each step and project the caption inside the step, as the pipelines do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import gpustd

from ._dit_models import PIXART_SIGMA, Model

NAMES = ("pixart",)
BLOCK = 300  # PixArtSigmaPipeline's max_sequence_length
REAL = 40


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of the row (a numpy array each): the latents, the caption block and its
    mask (the real tokens first, as T5's tokenizer pads on the right)."""
    rng = np.random.default_rng(0)
    side = config["sample_size"]
    block, real = (24, 9) if quick else (BLOCK, REAL)
    mask = np.zeros((1, block), bool)
    mask[0, :real] = True
    return {"latents": rng.standard_normal((1, config["in_channels"], side, side)),
            "text": rng.standard_normal((1, block, config["caption_channels"])), "mask": mask,
            # the scheduler's integer timestep, exact in bf16 and float16
            "t": np.array([500.0]), "rows": np.array(side)}


def model(name: str) -> Model:
    """The model table's line for the row."""
    from diffusion.models.pixart import PixArtTransformer2DModel

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        t = x["torch"]
        return ref(hidden_states=t["latents"], encoder_hidden_states=t["text"],
                   timestep=t["t"], encoder_attention_mask=t["mask"],
                   added_cond_kwargs={"resolution": None, "aspect_ratio": None},
                   return_dict=False)[0]

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        latents = gpustd.asarray(x["latents"], dtype=dtype, device=ours.device)
        text = gpustd.asarray(x["text"], dtype=dtype, device=ours.device)
        return ours(latents, text, x["t"], x["mask"])

    return Model(PIXART_SIGMA, lambda d, t, c: d.PixArtTransformer2DModel(**c), ref_call,
                 lambda c, dt, dev: PixArtTransformer2DModel(c, dtype=dt, device=dev), call)
