"""ERNIE-Image's row of bench/dit_families.py: its transformer's step at 1024x1024 (64 x 64
patchified latents of 128 channels: 4096 patches) after 256 prompt tokens (ErnieImagePipeline
hands the transformer a prompt's own tokens, unpadded: 256 are a prompt-enhancer-length
prompt), every token attended to.

As each side's pipeline runs it: ours keeps the prompt's states on the device (the text
encoder's output), timed once beside the step (prefix_ms); both build the rotary tables in
the step (ours keeps them for the next steps of the size: after the first, a lookup)."""

from __future__ import annotations

from typing import Any

import numpy as np

import gpustd

from ._dit_models import ERNIE, Model

NAMES = ("ernie",)
TEXT = 256


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of the row (a numpy array each): the noise, the prompt's states, the
    timestep on the scheduler's 0..1000 scale (500: exact in bf16 and float16)."""
    rng = np.random.default_rng(0)
    side, text = (6, 12) if quick else (64, TEXT)
    return {"latents": rng.standard_normal((1, config["in_channels"], side, side)),
            "text": rng.standard_normal((1, text, config["text_in_dim"])),
            "lens": np.array([text]), "t": np.array([500.0]), "rows": np.array(side)}


def model(name: str) -> Model:
    """The model table's line for the row."""
    from diffusion.models.ernie_image import ErnieImageTransformer2DModel

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        t = x["torch"]
        return ref(hidden_states=t["latents"], timestep=t["t"], text_bth=t["text"],
                   text_lens=t["lens"].long(), return_dict=False)[0]

    def prefix(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        return gpustd.asarray(x["text"], dtype=dtype, device=ours.device)

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        text = x["prefix"]
        latents = gpustd.asarray(x["latents"], dtype=dtype, device=text.device)
        return ours(latents, text, x["t"])

    return Model(ERNIE, lambda d, t, c: d.ErnieImageTransformer2DModel(**c), ref_call,
                 lambda c, dt, dev: ErnieImageTransformer2DModel(c, dtype=dt, device=dev),
                 call, ours_prefix=prefix)
