"""Sana 1600M's rows of bench/dit_families.py: its transformer's step at 1024x1024 (`sana`:
DC-AE's 32x latents, 32 x 32 of 32 channels in 1 x 1 patches: 1024 tokens) and at 4096x4096
(`sana4k`: Sana 4K's 128 x 128 = 16 384 tokens with its sin-cos positions), for a prompt in
SanaPipeline's 300-token Gemma 2 block: with the default complex human instruction the block
is BOS, the instruction's last token, the prompt's 60 tokens and padding (62 real tokens,
the rest masked).

As each side's model runs it: diffusers' cross-attention reads the whole 300-token block with
its mask every step; ours trims the padding past the last kept token (a masked key that no
query reads: the same output, rel_err). Both sides take the latents and the caption's states
each step, neither makes a part of the prompt once. Sana 4K's reference holds its sin-cos table
in bf16, as a bf16 pipeline does (built under bf16, it stays so in --quick's float32
reference too: 1.4e-3 of that run's rel_err, 4e-7 with a float32 table).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import gpustd

from ._dit_models import SANA_4K, SANA_1600M, Model

NAMES = ("sana", "sana4k")
BLOCK = 300  # SanaPipeline's max_sequence_length
REAL = 62  # BOS, the instruction's last token and a 60-token prompt


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of the row (a numpy array each): the latents, the caption block and its
    mask (the real tokens first, as Gemma's tokenizer pads on the right)."""
    rng = np.random.default_rng(0)
    side = config["sample_size"]  # the latents' side (1 x 1 patches)
    block, real = (24, 9) if quick else (BLOCK, REAL)
    mask = np.zeros((1, block), bool)
    mask[0, :real] = True
    return {"latents": rng.standard_normal((1, config["in_channels"], side, side)),
            "text": rng.standard_normal((1, block, config["caption_channels"])), "mask": mask,
            # t x timestep_scale (1), as the pipeline passes it; exact in bf16 and float16
            "t": np.array([500.0]), "rows": np.array(side)}


def model(name: str) -> Model:
    """The model table's line for the row."""
    from diffusion.models.sana import SanaTransformer2DModel

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        t = x["torch"]
        return ref(hidden_states=t["latents"], encoder_hidden_states=t["text"],
                   timestep=t["t"].to(t["latents"].dtype),  # as the pipeline casts it
                   encoder_attention_mask=t["mask"], return_dict=False)[0]

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        latents = gpustd.asarray(x["latents"], dtype=dtype, device=ours.device)
        text = gpustd.asarray(x["text"], dtype=dtype, device=ours.device)
        return ours(latents, text, x["t"], None, x["mask"])

    return Model(SANA_4K if name == "sana4k" else SANA_1600M,
                 lambda d, t, c: d.SanaTransformer2DModel(**c), ref_call,
                 lambda c, dt, dev: SanaTransformer2DModel(c, dtype=dt, device=dev), call)
