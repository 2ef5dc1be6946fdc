"""Ovis-Image's row of bench/dit_families.py: its transformer's step at 1024x1024 (64 x 64
packed latents of 64 channels: 4096 patches) after the prompt's 256 Qwen3 places, which
OvisImagePipeline hands the transformer whole (the prompt padded to 256 + 28 inside the chat
template, the first 28 dropped, every place attended to, no mask), text at positions (0, i, i)
and the patches at (0, row, column).

As each side's pipeline runs it: diffusers builds the rotary tables from the ids every step;
ours makes them once a run (`rotary`, as OvisImagePipeline.velocity does) and keeps the
prompt's states on the device (the text encoder's output), both timed once beside the step
(prefix_ms).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import gpustd

from ._dit_models import OVIS, Model

NAMES = ("ovis",)
TEXT = 256  # OvisImagePipeline's max_sequence_length: every prompt's states


def _ids(text: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The pipeline's positions: text token i at (0, i, i), patch (r, c) at (0, r, c)."""
    txt = np.zeros((text, 3), np.float32)
    txt[:, 1] = txt[:, 2] = np.arange(text)
    r, c = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    img = np.stack([np.zeros(side * side), r.ravel(), c.ravel()], axis=1)
    return txt, img.astype(np.float32)


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of the row (a numpy array each): the packed noise, the prompt's states
    and the positions."""
    rng = np.random.default_rng(0)
    side, text = (6, 12) if quick else (64, TEXT)
    txt_ids, img_ids = _ids(text, side)
    return {"latents": rng.standard_normal((1, side * side, config["in_channels"])),
            "text": rng.standard_normal((1, text, config["joint_attention_dim"])),
            "txt_ids": txt_ids, "img_ids": img_ids,
            # sigma, as the pipeline passes it (t / 1000); x 1000 exact in bf16 and float16
            "t": np.array([0.5]), "rows": np.array(side)}


def model(name: str) -> Model:
    """The model table's line for the row."""
    from diffusion.models.ovis_image import OvisImageTransformer2DModel

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

    return Model(OVIS, lambda d, t, c: d.OvisImageTransformer2DModel(**c), ref_call,
                 lambda c, dt, dev: OvisImageTransformer2DModel(c, dtype=dt, device=dev),
                 call, ours_prefix=prefix)
