"""Qwen-Image 2.1's rows of bench/dit_families.py: its transformer's step at 1024x1024 (4096
latent tokens, unpatched) after a 256-token prompt, and Qwen3-VL-8B's language model reading a
256-token prompt to its last layer's states before the final norm (what QwenImage21Pipeline
hands the transformer).

The step as the pipeline's after its first: the prompt's keys and values are made once
(diffusers: the transformer with its kv_cache in "extract" mode, the whole sequence; ours:
`prefix(states)`), each timed once beside the step (prefix_ms); the step then runs the
picture's tokens alone against them (diffusers: kv_cache_mode "cached"; ours:
`model(tokens, t, 64, 64, prefix)`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import gpustd

from ._dit_models import QWEN3VL_8B, QWEN_IMAGE21, Model

NAMES = ("qwen3vl_8b", "qwenimage21")
TEXT = 256  # a typical prompt's tokens: the encoder's input, the transformer's text states


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of row `name` (a numpy array each; `rows` the latents' side)."""
    rng = np.random.default_rng(0)
    text = 12 if quick else TEXT
    if name == "qwen3vl_8b":
        return {"ids": rng.integers(0, config["vocab_size"], (1, text))}
    side = 8 if quick else 64  # latents per side: 1024 / 16
    slots = side * side // 4  # diffusers' img_mask: the prompt, then a slot per 2 x 2 latents
    return {"latents": rng.standard_normal((1, side * side, config["in_channels"])),
            "text": rng.standard_normal((1, text, config["context_in_dim"])),
            "img_mask": np.concatenate([np.zeros((1, text), bool), np.ones((1, slots), bool)],
                                       axis=1),
            # exact in bf16 and float16: each side rounds the timestep to its dtype
            "t": np.array([0.5]), "rows": np.array(side)}


def model(name: str) -> Model:
    """The model table's line for row `name` (one of NAMES)."""
    return _encoder() if name == "qwen3vl_8b" else _transformer()


def _encoder() -> Model:
    from diffusion.models.llm import LLMTextModel

    def reference(diffusers: Any, transformers: Any, config: dict[str, Any]) -> Any:
        fields = {k: v for k, v in config.items() if k != "model_type"}
        return transformers.Qwen3VLTextModel(transformers.Qwen3VLTextConfig(**fields))

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        # the last layer's output, the final norm made the identity as the pipeline makes it
        handle = ref.norm.register_forward_hook(lambda module, args, output: args[0])
        try:
            return ref(input_ids=x["torch"]["ids"]).last_hidden_state
        finally:
            handle.remove()

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        return ours.hidden_states(x["ids"], None, -1, final_norm=False)

    return Model(QWEN3VL_8B, reference, ref_call,
                 lambda c, dt, dev: LLMTextModel(c, dtype=dt, device=dev), call)


def _transformer() -> Model:
    from diffusion.models.qwen_image21 import QwenImage21Transformer2DModel

    def step(ref: Any, x: dict[str, Any], mode: str) -> Any:
        t, rows = x["torch"], int(x["rows"])
        return ref(hidden_states=t["latents"], encoder_hidden_states=t["text"],
                   timestep=t["t"], img_shapes=[[(1, rows, rows)]], img_mask=t["img_mask"],
                   kv_cache=t["cache"], kv_cache_mode=mode).sample

    def ref_prefix(ref: Any, x: dict[str, Any]) -> Any:
        from diffusers.models.transformers.transformer_qwenimage21 import QwenImage21KVCache

        x["torch"]["cache"] = QwenImage21KVCache(len(ref.transformer_blocks))
        return step(ref, x, "extract")

    def prefix(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        # float32 states, as the pipeline hands over the encoder's
        return ours.prefix(gpustd.asarray(x["text"], dtype=np.float32, device=ours.device))

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        rows = int(x["rows"])
        latents = gpustd.asarray(x["latents"], dtype=dtype, device=ours.device)
        return ours(latents, x["t"], rows, rows, x["prefix"])

    return Model(QWEN_IMAGE21, lambda d, t, c: d.QwenImage21Transformer2DModel(**c),
                 lambda ref, x: step(ref, x, "cached"),
                 lambda c, dt, dev: QwenImage21Transformer2DModel(c, dtype=dt, device=dev),
                 call, torch_prefix=ref_prefix, ours_prefix=prefix)
