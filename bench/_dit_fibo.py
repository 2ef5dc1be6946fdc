"""Bria FIBO's row of bench/dit_families.py: its transformer's step at 1024x1024 (64 x 64
latent pixels of Wan 2.2's 48 channels, one token each: 4096) after a 1024-token JSON
caption, its 8 double and 38 single blocks each fed one of SmolLM3-3B's 37 hidden states
(the last repeated over the 9 blocks past them, as BriaFiboPipeline hands them), text at
position 0 and the latents at (0, row, column); one prompt, unmasked.

As each side's pipeline runs it: diffusers builds the rotary tables from the ids every step;
ours makes them once a run (as BriaFiboPipeline does) and keeps the prompt's states and
layers on the device (the text encoder's output), both timed once beside the step
(prefix_ms).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import gpustd

from ._dit_models import FIBO, Model

NAMES = ("fibo",)
TEXT = 1024  # a long JSON caption's tokens (FIBO's run to 1000+ words)
STATES = 37  # SmolLM3-3B's hidden states: the embeddings and 36 layers


def _blocks(states: int, config: Any) -> list[int]:
    """Which of the `states` hidden states each block reads (BriaFiboPipeline's
    selection)."""
    from diffusion.models.bria_fibo import block_layers

    return block_layers(list(range(states)), config["num_layers"] + config["num_single_layers"])


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of the row (a numpy array each): the noise as tokens, the prompt's
    states, SmolLM3's hidden states (float32: 37 x 1024 x 2048 at full size) and the
    positions."""
    rng = np.random.default_rng(0)
    side, text = (6, 12) if quick else (64, TEXT)
    states = STATES if not quick else 3
    img = np.zeros((side, side, 3), np.float32)
    img[..., 1], img[..., 2] = np.arange(side)[:, None], np.arange(side)[None, :]
    return {"latents": rng.standard_normal((1, side * side, config["in_channels"])),
            "text": rng.standard_normal((1, text, config["joint_attention_dim"])),
            "layers": rng.standard_normal((states, 1, text, config["text_encoder_dim"]),
                                          dtype=np.float32),
            "txt_ids": np.zeros((text, 3), np.float32), "img_ids": img.reshape(-1, 3),
            # sigma, as the pipeline passes it (t / 1000); x 1000 exact in bf16 and float16
            "t": np.array([0.5]), "rows": np.array(side)}


def model(name: str) -> Model:
    """The model table's line for the row."""
    from diffusion.models.bria_fibo import BriaFiboTransformer2DModel

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        t = x["torch"]
        layers = [t["layers"][i] for i in _blocks(len(t["layers"]), ref.config)]
        return ref(hidden_states=t["latents"], encoder_hidden_states=t["text"],
                   text_encoder_layers=layers, timestep=t["t"] * 1000, img_ids=t["img_ids"],
                   txt_ids=t["txt_ids"], return_dict=False)[0]

    def prefix(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        device = ours.x_embedder.weight.device
        states = [gpustd.asarray(layer, dtype=dtype, device=device) for layer in x["layers"]]
        text = gpustd.asarray(x["text"], dtype=dtype, device=device)
        return (ours.rotary(x["txt_ids"], x["img_ids"]), text,
                [states[i] for i in _blocks(len(states), ours.config)])

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        rotary, text, layers = x["prefix"]
        latents = gpustd.asarray(x["latents"], dtype=dtype, device=text.device)
        return ours(latents, text, layers, x["t"], rotary=rotary)

    return Model(FIBO, lambda d, t, c: d.BriaFiboTransformer2DModel(**c), ref_call,
                 lambda c, dt, dev: BriaFiboTransformer2DModel(c, dtype=dt, device=dev),
                 call, ours_prefix=prefix)
