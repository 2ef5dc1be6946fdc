"""NucleusMoE-Image's row of bench/dit_families.py: its transformer's step at 1024x1024 (64 x
64 packed latents of 64 channels: 4096 patches) after 128 prompt tokens of Qwen3-VL-8B's
4096-wide states, unmasked, at the released checkpoint's config (32 blocks 2048 wide, 16
query heads for 4 key/value heads, blocks 3 to 31 mixtures of 64 experts whose capacity
factors give each expert 512 (blocks 3, 4) or 256 of the 4096 patches; ~17B parameters).

As each side's pipeline runs it: ours keeps the prompt's states on the device (the text
encoder's output), timed once beside the step (prefix_ms), and makes the rotary tables once
a size; diffusers builds them every step. The routing (each block's router logits read back,
the experts' tokens chosen on the host) is in ours' step."""

from __future__ import annotations

from typing import Any

import numpy as np

import gpustd

from ._dit_models import NUCLEUS, Model

NAMES = ("nucleus",)
TEXT = 128


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of the row (a numpy array each): the packed noise, the prompt's states,
    sigma as the pipeline passes it (t / 1000; 0.5 exact in bf16 and float16)."""
    rng = np.random.default_rng(0)
    side, text = (6, 12) if quick else (64, TEXT)
    return {"latents": rng.standard_normal((1, side * side, config["in_channels"])),
            "text": rng.standard_normal((1, text, config["joint_attention_dim"])),
            "t": np.array([0.5]), "rows": np.array(side)}


def model(name: str) -> Model:
    """The model table's line for the row."""
    from diffusion.models.nucleusmoe_image import NucleusMoEImageTransformer2DModel

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        t = x["torch"]
        side = int(x["rows"])
        return ref(hidden_states=t["latents"], img_shapes=[(1, side, side)],
                   encoder_hidden_states=t["text"], timestep=t["t"], return_dict=False)[0]

    def prefix(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        return gpustd.asarray(x["text"], dtype=dtype, device=ours.device)

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        text, side = x["prefix"], int(x["rows"])
        latents = gpustd.asarray(x["latents"], dtype=dtype, device=text.device)
        return ours(latents, text, x["t"], side, side)

    return Model(NUCLEUS, lambda d, t, c: d.NucleusMoEImageTransformer2DModel(**c), ref_call,
                 lambda c, dt, dev: NucleusMoEImageTransformer2DModel(c, dtype=dt, device=dev),
                 call, ours_prefix=prefix)
