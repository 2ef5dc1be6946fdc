"""AuraFlow's row of bench/dit_families.py: AuraFlow v0.3's transformer step at 1024x1024
(128 x 128 latents of 4 channels in 2 x 2 patches: 4096 patches) after UMT5's 256 states,
the first 64 a prompt's and the rest zeros (AuraFlowPipeline zeroes the padding's states and
the transformer reads all 256, with its 8 register tokens before them)."""

from __future__ import annotations

from typing import Any

import numpy as np

import gpustd

from ._dit_models import AURAFLOW, Model

NAMES = ("auraflow",)
TEXT, REAL = 256, 64  # AuraFlowPipeline's max_sequence_length; a prompt's tokens


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of the row (a numpy array each): the noise and the prompt's states."""
    rng = np.random.default_rng(0)
    side, text, real = (12, 12, 5) if quick else (128, TEXT, REAL)
    states = rng.standard_normal((1, text, config["joint_attention_dim"]))
    states[:, real:] = 0  # the padding's, zeroed by the pipeline
    return {"latents": rng.standard_normal((1, config["in_channels"], side, side)),
            "text": states,
            # sigma, as the pipeline passes it (t / 1000); x 1000 exact in bf16 and float16
            "t": np.array([0.5]), "rows": np.array(side)}


def model(name: str) -> Model:
    """The model table's line for the row."""
    from diffusion.models.auraflow import AuraFlowTransformer2DModel

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        t = x["torch"]
        return ref(hidden_states=t["latents"], encoder_hidden_states=t["text"],
                   timestep=t["t"], return_dict=False)[0]

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        device = ours.proj_out.weight.device
        return ours(gpustd.asarray(x["latents"], dtype=dtype, device=device),
                    gpustd.asarray(x["text"], dtype=dtype, device=device), x["t"])

    return Model(AURAFLOW, lambda d, t, c: d.AuraFlowTransformer2DModel(**c), ref_call,
                 lambda c, dt, dev: AuraFlowTransformer2DModel(c, dtype=dt, device=dev), call)
