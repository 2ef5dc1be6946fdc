"""T5Gemma's encoder (Google, 2025: Gemma 2 turned encoder-decoder), the PRX family's text
encoder: Gemma 2's layers (llm.py's "gemma2": zero-centred RMS norms around each sublayer, the
embeddings scaled by sqrt(hidden_size), grouped-query attention with soft-capped scores, a
tanh-GELU gated MLP) attending both ways, every token to every real token of the prompt
(padding left out by the mask), and the final norm.

The sliding window of the local layers is both ways too (|i - j| < window); as in llm.py a
prompt longer than the window is refused (PRX reads at most its tokenizer's 256 tokens, the
real window is 4096: it never binds).

    encoder = T5GemmaEncoder(config)          # text_encoder/config.json
    encoder.load_state_dict(renamed)          # t5gemma_key over the file's names
    states = encoder.hidden_states(ids, mask) # (B, L, hidden_size) float32

transformers: `T5GemmaEncoder(config)(input_ids, attention_mask).last_hidden_state`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device

from .llm import LLMTextModel

__all__ = ["T5GemmaEncoder", "encoder_config", "t5gemma_key"]

# transformers' T5Gemma names -> Gemma 2's (llm_layers.LLMDecoderLayer's), the layers' norms
_RENAMED = {".pre_self_attn_layernorm.": ".input_layernorm.",
            ".post_self_attn_layernorm.": ".post_attention_layernorm."}


def t5gemma_key(name: str) -> str:
    """A T5Gemma encoder tensor's name as T5GemmaEncoder holds it: the two attention norms
    renamed to Gemma 2's, a whole encoder-decoder's `encoder.` prefix dropped (the decoder's
    tensors are for the caller to leave out)."""
    name = name.removeprefix("model.").removeprefix("encoder.")
    for old, new in _RENAMED.items():
        name = name.replace(old, new)
    return name


def encoder_config(config: dict[str, Any]) -> dict[str, Any]:
    """The encoder's own config (T5GemmaModuleConfig's keys) from a text_encoder/config.json:
    a whole T5GemmaConfig's `encoder` entry, or the module config itself (what a saved
    `T5GemmaEncoder` writes). ValueError in one line for another model or a config without
    the soft cap (this encoder forms its scores through Gemma 2's capped path)."""
    kind = config.get("model_type")
    if kind not in ("t5gemma", "t5_gemma_module"):
        raise ValueError(f"a T5Gemma text encoder has model_type t5gemma or t5_gemma_module, "
                         f"got {kind!r}: give the model folder's own text_encoder/")
    inner = config.get("encoder") if kind == "t5gemma" else config
    if not isinstance(inner, dict):
        raise ValueError("a t5gemma config names its encoder's settings under 'encoder'; this "
                         "one has none")
    if inner.get("attn_logit_softcapping") is None and "attn_logit_softcapping" in inner:
        raise ValueError("a T5Gemma encoder without attn_logit_softcapping is not supported "
                         "(every released T5Gemma caps its scores at 50)")
    return {**inner, "model_type": "t5gemma_encoder"}


class T5GemmaEncoder(LLMTextModel):
    """Token ids -> T5Gemma's encoder states: LLMTextModel's Gemma 2 with bidirectional
    attention. `config`: text_encoder/config.json (`encoder_config` reads it). Parameter names
    are Gemma 2's (`t5gemma_key` maps transformers' to them)."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        super().__init__(encoder_config(config), dtype=dtype, device=device)
