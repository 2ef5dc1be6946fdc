"""HiDream-I1's row of bench/dit_families.py: HiDream-I1-Full's transformer step at 1024x1024
(128 x 128 latents of 16 channels in 2 x 2 patches: 4096 patches) for T5's 128 tokens and the
stack of Llama 3.1 8B's 32 layers over its 128 tokens, the two CLIPs' pooled 2048 features.

As each side's pipeline runs it: HiDreamImagePipeline pads both prompts to
max_sequence_length (128) and hands the transformer every place, no mask; each block reads
its own Llama layer (llama_layers: layer i for block i, the last layer for blocks 32 on), the
double blocks beside the T5 tokens and the last layer's, the single blocks after them. Every
feed-forward is the mixture of 4 routed experts (top 2) plus the shared one. Both sides take
the latents as (B, C, H, W) and patch them inside the step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import gpustd

from ._dit_models import HIDREAM, Model

NAMES = ("hidream",)
TEXT = 128  # HiDreamImagePipeline's max_sequence_length, for T5 and Llama alike


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of the row (a numpy array each): the latents, T5's states, the stack of
    Llama layers' states (layers, B, L, width) and the pooled CLIP features."""
    rng = np.random.default_rng(0)
    side, text = (8, 6) if quick else (128, TEXT)
    t5_width, llama_width = config["caption_channels"]
    layers = max(config["llama_layers"]) + 1
    return {"latents": rng.standard_normal((1, config["in_channels"], side, side)),
            "t5": rng.standard_normal((1, text, t5_width)),
            "llama": rng.standard_normal((layers, 1, text, llama_width)),
            "pooled": rng.standard_normal((1, config["text_emb_dim"])),
            # the scheduler's timestep (0..1000), as the pipeline passes it
            "t": np.array([500.0]), "rows": np.array(side)}


def model(name: str) -> Model:
    """The model table's line for the row."""
    from diffusion.models.hidream import HiDreamImageTransformer2DModel

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        t = x["torch"]
        return ref(hidden_states=t["latents"], timesteps=t["t"],
                   encoder_hidden_states_t5=t["t5"], encoder_hidden_states_llama3=t["llama"],
                   pooled_embeds=t["pooled"], return_dict=False)[0]

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        def put(key: str) -> Any:
            return gpustd.asarray(x[key], dtype=dtype, device=ours.device)

        return ours(put("latents"), x["t"], put("t5"), put("llama"), put("pooled"))

    return Model(HIDREAM, lambda d, t, c: d.HiDreamImageTransformer2DModel(**c), ref_call,
                 lambda c, dt, dev: HiDreamImageTransformer2DModel(c, dtype=dt, device=dev),
                 call)
