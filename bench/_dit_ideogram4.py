"""Ideogram 4's row of bench/dit_families.py: its conditional transformer's step at 1024x1024
(64 x 64 patches of FLUX.2's 128-channel patchified latents: 4096) after 256 prompt tokens of
Qwen3-VL's 13 interleaved taps (53 248 features a token).

As each side's pipeline runs it: diffusers packs [prompt][picture] into one sequence with its
position ids, segment ids (a block-diagonal mask: here one segment, no padding) and role
indicators and returns every token's output (the picture's kept); ours reads the prompt's
features and the patches apart, without a mask, the prompt's features kept on the device (the
text encoder's output), timed once beside the step (prefix_ms). The unconditional
transformer's pass (as large, the picture alone) is not in the row."""

from __future__ import annotations

from typing import Any

import numpy as np

import gpustd

from ._dit_models import IDEOGRAM4, Model

NAMES = ("ideogram4",)
TEXT = 256


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of the row (a numpy array each): the patches, the prompt's features and
    the model time (0.5); diffusers' packed position, segment and indicator ids."""
    from diffusers.pipelines.ideogram4.pipeline_ideogram4 import Ideogram4Pipeline

    rng = np.random.default_rng(0)
    side, text = (3, 5) if quick else (64, TEXT)
    position, segment, indicator = Ideogram4Pipeline._prepare_ids([text], side, side, text,
                                                                  "cpu")
    return {"latents": rng.standard_normal((1, side * side, config["in_channels"])),
            "text": rng.standard_normal((1, text, config["llm_features_dim"])),
            "t": np.array([0.5]), "rows": np.array(side), "position": position.numpy(),
            "segment": segment.numpy(), "indicator": indicator.numpy()}


def model(name: str) -> Model:
    """The model table's line for the row."""
    from diffusion.models.ideogram4 import Ideogram4Transformer2DModel

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        import torch

        t = x["torch"]
        text, device = t["text"], t["latents"].device
        # the bench's bf16 cast rounded the rotary frequencies (a buffer) too, which the
        # positions near 65536 would magnify: made again in float32, as the model makes them
        rotary = ref.rotary_emb
        rotary.inv_freq = 1.0 / (ref.config.rope_theta ** (torch.arange(
            0, rotary.head_dim, 2, dtype=torch.float32, device=device) / rotary.head_dim))
        packed = torch.cat([torch.zeros(*text.shape[:2], t["latents"].shape[2], device=device,
                                        dtype=text.dtype), t["latents"]], dim=1)
        features = torch.cat([text, torch.zeros(*t["latents"].shape[:2], text.shape[2],
                                                device=device, dtype=text.dtype)], dim=1)
        ids = {k: torch.from_numpy(np.asarray(x[k])).to(device)
               for k in ("position", "segment", "indicator")}
        out = ref(packed, t["t"].to(text.dtype), features, ids["position"], ids["segment"],
                  ids["indicator"], return_dict=False)[0]
        return out[:, text.shape[1]:]

    def prefix(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        return gpustd.asarray(x["text"], dtype=np.float32, device=ours.device)

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        text, side = x["prefix"], int(x["rows"])
        latents = gpustd.asarray(x["latents"], dtype=dtype, device=text.device)
        return ours(latents, x["t"], text, side, side)

    return Model(IDEOGRAM4, lambda d, t, c: d.Ideogram4Transformer2DModel(**c), ref_call,
                 lambda c, dt, dev: Ideogram4Transformer2DModel(c, dtype=dt, device=dev),
                 call, ours_prefix=prefix)
