"""CogView4's and Cosmos Predict2 Text2Image's rows of bench/dit_families.py, each transformer's
step at 1024x1024 (128 x 128 latents of 16 channels in 2 x 2 patches: 4096 patches).

CogView4-6B (diffusers' convert_cogview4_to_diffusers config: 28 blocks of 32 heads of 128,
GLM-4-9B's 4096-wide states) after 128 prompt tokens: CogView4Pipeline pads the prompt to a
multiple of 16 and hands every token over unmasked; the size condition is the picture's
(original 1024 x 1024, crop (0, 0), target 1024 x 1024).

Cosmos Predict2 2B Text2Image (the converter's `Cosmos-2.0-Diffusion-2B-Text2Image`: 28 blocks
of 16 heads of 128, T5-11B's 1024-wide states) after T5's 512 places, which
Cosmos2TextToImagePipeline passes whole; one latent frame, the padding mask's channel zeros.

Each side as its pipeline runs it: ours keeps the prompt's states on the device (the text
encoder's output) and makes its rotary tables once (timed once beside the step, prefix_ms).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import gpustd

from ._dit_models import COGVIEW4, COSMOS2, Model

NAMES = ("cogview4", "cosmos2")
TEXT = {"cogview4": 128, "cosmos2": 512}


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of the row (a numpy array each): the noise, the prompt's states, the
    timestep and (CogView4) the size condition."""
    rng = np.random.default_rng(0)
    side, text = (10, 12) if quick else (128, TEXT[name])
    width = config["text_embed_dim"]
    shape = (1, 16, side, side) if name == "cogview4" else (1, 16, 1, side, side)
    x = {"latents": rng.standard_normal(shape), "text": rng.standard_normal((1, text, width)),
         # exact in bf16 and float16
         "t": np.array([500.0 if name == "cogview4" else 0.5])}
    if name == "cogview4":
        pixels = float(side * 8)
        x.update(size=np.array([[pixels, pixels]]), crop=np.zeros((1, 2)))
    else:
        x["padding"] = np.zeros((1, 1, side, side))
    return x


def _cogview4() -> Model:
    from diffusion.models.cogview4 import CogView4Transformer2DModel

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        t = x["torch"]
        return ref(hidden_states=t["latents"], encoder_hidden_states=t["text"],
                   timestep=t["t"], original_size=t["size"], target_size=t["size"],
                   crop_coords=t["crop"], return_dict=False)[0]

    def prefix(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        rows = x["latents"].shape[2] // 2
        ours.rotary(x["text"].shape[1], rows, rows)
        return gpustd.asarray(x["text"], dtype=dtype, device=ours.device)

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        text = x["prefix"]
        latents = gpustd.asarray(x["latents"], dtype=dtype, device=text.device)
        return ours(latents, text, x["t"], x["size"], x["size"], x["crop"])

    return Model(COGVIEW4, lambda d, t, c: d.CogView4Transformer2DModel(**c), ref_call,
                 lambda c, dt, dev: CogView4Transformer2DModel(c, dtype=dt, device=dev),
                 call, ours_prefix=prefix)


def _cosmos2() -> Model:
    from diffusion.models.cosmos import CosmosTransformer3DModel

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        t = x["torch"]
        return ref(hidden_states=t["latents"], timestep=t["t"], encoder_hidden_states=t["text"],
                   padding_mask=t["padding"], return_dict=False)[0]

    def prefix(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        return ours.encode_text(gpustd.asarray(x["text"], dtype=dtype, device=ours.device))

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        context = x["prefix"]
        latents = gpustd.asarray(x["latents"], dtype=dtype, device=context.device)
        return ours(latents, x["t"], context=context)

    return Model(COSMOS2, lambda d, t, c: d.CosmosTransformer3DModel(**c), ref_call,
                 lambda c, dt, dev: CosmosTransformer3DModel(c, dtype=dt, device=dev),
                 call, ours_prefix=prefix)


def model(name: str) -> Model:
    """The model table's line for the row."""
    return _cogview4() if name == "cogview4" else _cosmos2()
