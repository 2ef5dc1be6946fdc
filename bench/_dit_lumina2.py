"""Lumina Image 2.0's row of bench/dit_families.py: its transformer's step at 1024x1024 (128 x
128 latents of 16 channels in 2 x 2 patches: 4096 patches) for a prompt of 92 real tokens
(about 32 of Lumina2Pipeline's system prompt and "<Prompt Start>", BOS included, and a
60-token prompt) in the pipeline's 256-token Gemma 2 block (max_sequence_length), the
padding masked as the pipeline passes it.

As each side's pipeline runs it: diffusers' context refiner reads the whole 256-token block
with its mask every step, then the joint blocks run over the 92 real tokens + 4096 patches
(batch 1: unmasked); ours reads the 92 real tokens alone (our pipeline encodes the prompt
unpadded and uploads its states and the latents each step), the same output (a masked key
that no query reads: rel_err). Neither side makes a part of the prompt once: the caption
refiner is unmodulated, but both models run it inside every step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import gpustd

from ._dit_models import LUMINA2, Model

NAMES = ("lumina2",)
BLOCK = 256  # Lumina2Pipeline's max_sequence_length: the padded caption block
REAL = 92  # the system prompt's tokens and a typical prompt's 60


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of the row (a numpy array each): the latents, the caption block and its
    mask (the real tokens first, as Gemma's tokenizer pads on the right)."""
    rng = np.random.default_rng(0)
    side, block, real = (8, 24, 9) if quick else (128, BLOCK, REAL)
    mask = np.zeros((1, block), bool)
    mask[0, :real] = True
    return {"latents": rng.standard_normal((1, config["in_channels"], side, side)),
            "text": rng.standard_normal((1, block, config["cap_feat_dim"])), "mask": mask,
            # 1 - t / 1000, as the pipeline passes it; exact in bf16 and float16
            "t": np.array([0.5]), "rows": np.array(side)}


def model(name: str) -> Model:
    """The model table's line for the row."""
    from diffusion.models.lumina2 import Lumina2Transformer2DModel

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        t = x["torch"]
        return ref(hidden_states=t["latents"], timestep=t["t"],
                   encoder_hidden_states=t["text"], encoder_attention_mask=t["mask"],
                   return_dict=False)[0]

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        real = int(x["mask"].sum())
        latents = gpustd.asarray(x["latents"], dtype=dtype, device=ours.device)
        text = gpustd.asarray(x["text"][:, :real], dtype=dtype, device=ours.device)
        return ours(latents, x["t"], text, x["mask"][:, :real])

    return Model(LUMINA2, lambda d, t, c: d.Lumina2Transformer2DModel(**c), ref_call,
                 lambda c, dt, dev: Lumina2Transformer2DModel(c, dtype=dt, device=dev), call)
