"""Bria 3.2's row of bench/dit_families.py: its transformer's step at 1024x1024 (64 x 64
packed latents of 16 channels: 4096 patches; 8 double and 28 single blocks of 24 heads of 96)
after T5's 128 places, which BriaPipeline hands the transformer whole (unmasked), text at
position 0 and the patches at (0, row, column).

As each side's pipeline runs it: diffusers builds the rotary tables from the ids every step;
ours makes them once a run (`rotary`, as BriaPipeline does here) and keeps the prompt's states
on the device (the text encoder's output), both timed once beside the step (prefix_ms).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import gpustd

from ._dit_models import BRIA, Model

NAMES = ("bria",)
TEXT = 128  # BriaPipeline's max_sequence_length


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of the row (a numpy array each): the packed noise, the prompt's states
    and the positions."""
    rng = np.random.default_rng(0)
    side, text = (6, 12) if quick else (64, TEXT)
    img = np.zeros((side, side, 3), np.float32)
    img[..., 1], img[..., 2] = np.arange(side)[:, None], np.arange(side)[None, :]
    return {"latents": rng.standard_normal((1, side * side, config["in_channels"])),
            "text": rng.standard_normal((1, text, config["joint_attention_dim"])),
            "txt_ids": np.zeros((text, 3), np.float32), "img_ids": img.reshape(-1, 3),
            # the scheduler's timestep, as the pipeline passes it (0 .. 1000)
            "t": np.array([500.0]), "rows": np.array(side)}


def model(name: str) -> Model:
    """The model table's line for the row."""
    from diffusion.models.bria import BriaTransformer2DModel

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        t = x["torch"]
        return ref(hidden_states=t["latents"], encoder_hidden_states=t["text"],
                   timestep=t["t"], img_ids=t["img_ids"], txt_ids=t["txt_ids"],
                   return_dict=False)[0]

    def prefix(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        text = gpustd.asarray(x["text"], dtype=dtype, device=ours.x_embedder.weight.device)
        return ours.rotary(x["txt_ids"], x["img_ids"]), text

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        rotary, text = x["prefix"]
        latents = gpustd.asarray(x["latents"], dtype=dtype, device=text.device)
        return ours(latents, text, x["t"], rotary=rotary)

    return Model(BRIA, lambda d, t, c: d.BriaTransformer2DModel(**c), ref_call,
                 lambda c, dt, dev: BriaTransformer2DModel(c, dtype=dt, device=dev),
                 call, ours_prefix=prefix)
