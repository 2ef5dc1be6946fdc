"""PRX's row of bench/dit_families.py: its transformer's step at 1024x1024 (128 x 128 latents
of 16 channels in 2x2 patches: 4096 image tokens) for a 64-token prompt. PRXPipeline pads
every prompt to its tokenizer's 256 tokens and masks the padding out of each block's
attention; ours pads a batch to its longest prompt (prx_prompt: the same conditioning), so a
prompt alone attends over its own 64 tokens, unmasked. Each side's rotary tables and key mask
as its pipeline makes them: diffusers' every step, ours once a run (`rotary`) with the
prompt's states kept on the device, timed once beside the step (prefix_ms). The flow is
compared as 2x2 patch tokens (diffusers' turned into them, one copy in its step).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import gpustd

from ._dit_models import PRX, Model

NAMES = ("prx",)
TEXT, REAL = 256, 64  # PRX's tokenizer length; the prompt's real tokens


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of the row (a numpy array each): the latents, the padded prompt's states
    and its mask (diffusers'), the real tokens' (ours)."""
    rng = np.random.default_rng(0)
    side, text, real = (8, 12, 5) if quick else (128, TEXT, REAL)
    states = rng.standard_normal((1, text, config["context_in_dim"]))
    mask = np.zeros((1, text), bool)
    mask[:, :real] = True
    return {"latents": rng.standard_normal((1, config["in_channels"], side, side)),
            "text": states, "mask": mask, "real": states[:, :real],
            # the pipeline's t / 1000
            "t": np.array([0.5])}


def model(name: str) -> Model:
    """The model table's line for the row."""
    from diffusion.models.prx import PRXTransformer2DModel, patches

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        """diffusers' flow, its 2x2 patches as ours lays them (img2seq: one copy)."""
        t = x["torch"]
        out = ref(hidden_states=t["latents"], timestep=t["t"],
                  encoder_hidden_states=t["text"], attention_mask=t["mask"],
                  return_dict=False)[0]
        b, c, h, w = out.shape
        return out.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(
            b, (h // 2) * (w // 2), c * 4)

    def prefix(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        text = gpustd.asarray(x["real"], dtype=dtype, device=ours.txt_in.weight.device)
        side = x["latents"].shape[-1]
        return ours.rotary(side, side, text.shape[1]), text

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        rotary, text = x["prefix"]
        side = x["latents"].shape[-1]
        tokens = gpustd.asarray(patches(x["latents"], ours.config["patch_size"]), dtype=dtype,
                                device=text.device)
        return ours(tokens, text, x["t"], rotary, None, size=(side, side))

    return Model(PRX, lambda d, t, c: d.PRXTransformer2DModel(**c), ref_call,
                 lambda c, dt, dev: PRXTransformer2DModel(c, dtype=dt, device=dev),
                 call, ours_prefix=prefix)
