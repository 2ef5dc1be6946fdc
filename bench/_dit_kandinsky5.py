"""Kandinsky 5 Image Lite's row of bench/dit_families.py: its transformer's step at 1024x1024
(4096 patches of 128 x 128 channels-last latents) for a 128-token prompt (diffusers hands a
prompt's Qwen2.5-VL states unpadded) and CLIP's pooled vector.

Each side as its pipeline runs a step: diffusers projects the states inside every call; ours
projects them once a prompt (`text(states)`, timed once beside the step: prefix_ms) and every
step runs the text blocks (the pooled vector and the timestep modulate them) and the visual
blocks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._dit_models import KANDINSKY5, Model

NAMES = ("kandinsky5",)
TEXT = 128  # a typical prompt's tokens after the template's dropped prefix


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of the row (a numpy array each; `rows` the latents' side)."""
    rng = np.random.default_rng(0)
    side, text = (8, 9) if quick else (128, TEXT)  # latents per side: 1024 / 8
    return {"latents": rng.standard_normal((1, 1, side, side, config["in_visual_dim"])),
            "text": rng.standard_normal((1, text, config["in_text_dim"])),
            "pooled": rng.standard_normal((1, config["in_text_dim2"])),
            # exact in bf16 and float16: each side rounds the timestep to its dtype
            "t": np.array([500.0]), "rows": np.array(side)}


def model(name: str) -> Model:
    """The model table's line for the row."""
    from diffusion.models.kandinsky5 import Kandinsky5Transformer3DModel

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        import torch

        # the modules diffusers keeps float32 under from_pretrained(torch_dtype=bf16) (the
        # time embedding, the modulations), as the bench's cast of the whole model does not
        keep = tuple(ref._keep_in_fp32_modules or ())
        for name, module in ref.named_modules():
            if name.split(".")[-1] in keep:
                module.float()
        t, side = x["torch"], int(x["rows"])
        device = t["latents"].device
        return ref(hidden_states=t["latents"], encoder_hidden_states=t["text"],
                   pooled_projections=t["pooled"],
                   timestep=t["t"].to(t["latents"].dtype),  # as the pipeline casts it
                   visual_rope_pos=[torch.arange(1, device=device),
                                    torch.arange(side // 2, device=device),
                                    torch.arange(side // 2, device=device)],
                   text_rope_pos=torch.arange(t["text"].shape[1], device=device),
                   scale_factor=[1.0, 1.0, 1.0], sparse_params=None).sample

    def prefix(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        return ours.text(x["text"])  # the states read in float32, as the pipeline's

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        return ours(x["latents"], x["t"], x["prefix"], x["pooled"])

    return Model(KANDINSKY5, lambda d, t, c: d.Kandinsky5Transformer3DModel(**c), ref_call,
                 lambda c, dt, dev: Kandinsky5Transformer3DModel(c, dtype=dt, device=dev),
                 call, ours_prefix=prefix)
