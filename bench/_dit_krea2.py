"""Krea 2's row of bench/dit_families.py: its transformer's step at 1024x1024 (4096 patches)
for a prompt of 77 real tokens in Krea2Pipeline's 512-token block.

As each side's pipeline runs it: diffusers hands the whole block (the prompt, its padding in
the middle, the suffix) with the text mask, and every step runs the text fusion and the
blocks over 512 + 4096 tokens; ours runs the text fusion once a prompt (`text(states, mask)`,
timed once beside the step: prefix_ms), over the real tokens alone, and every step over 77 +
4096 tokens (the padding is a masked key that no query reads: the same output, rel_err).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._dit_models import KREA2, Model

NAMES = ("krea2",)
BLOCK = 512  # Krea2Pipeline's max_sequence_length: the text block every prompt fills
REAL = 77  # a typical prompt's tokens after the template's dropped prefix, its suffix included


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of the row (a numpy array each; `rows` the patches' side): the tapped
    states of the block, its mask ([prompt | padding | suffix]) and the rotary positions
    diffusers' pipeline makes."""
    rng = np.random.default_rng(0)
    side, block, real = (4, 24, 9) if quick else (64, BLOCK, REAL)
    mask = np.zeros((1, block), bool)
    mask[0, : real - 5] = mask[0, -5:] = True  # the padding sits before the 5 suffix tokens
    positions = np.zeros((block + side * side, 3), np.float32)
    positions[block:, 1] = np.repeat(np.arange(side), side)
    positions[block:, 2] = np.tile(np.arange(side), side)
    return {"latents": rng.standard_normal((1, side * side, config["in_channels"])),
            "text": rng.standard_normal((1, block, config["num_text_layers"],
                                         config["text_hidden_dim"])),
            "mask": mask, "position_ids": positions,
            # exact in bf16 and float16: each side rounds the timestep to its dtype
            "t": np.array([0.5]), "rows": np.array(side)}


def model(name: str) -> Model:
    """The model table's line for the row."""
    from diffusion.models.krea2 import Krea2Transformer2DModel

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        t = x["torch"]
        return ref(hidden_states=t["latents"], encoder_hidden_states=t["text"],
                   timestep=t["t"], position_ids=t["position_ids"],
                   encoder_attention_mask=t["mask"]).sample

    def prefix(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        return ours.text(x["text"], x["mask"])  # the states read in float32, as the pipeline's

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        rows = int(x["rows"])
        return ours(x["latents"], x["t"], rows, rows, x["prefix"])

    return Model(KREA2, lambda d, t, c: d.Krea2Transformer2DModel(**c), ref_call,
                 lambda c, dt, dev: Krea2Transformer2DModel(c, dtype=dt, device=dev), call,
                 ours_prefix=prefix)
