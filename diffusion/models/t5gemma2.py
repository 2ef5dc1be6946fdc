"""T5Gemma 2's text encoder (transformers' T5Gemma2Encoder `text_model`): Gemma 3's layers
(llm.LLMTextModel's "gemma3_text" pieces) read bidirectionally, every kept token seeing every
other; Motif-Video's prompt encoder, whose last hidden state (after the final norm) the
transformer reads.

transformers masks the padding out of every token's keys; its positions count from the padded
sequence's start, but rotary embeddings turn q and k by the same angle for the same offset, so a
prompt's kept tokens alone, at positions 0..n-1, give the same states: `encode` runs each prompt
that way (left or right padding alike). Its local layers see a window around each token (the
config's `sliding_window`: (window + 1) // 2 tokens back, window // 2 ahead); within it a
window changes nothing, and a prompt of more than (window + 1) // 2 tokens is refused (4096
tokens: 2048, past Motif's 512-token prompts). The end-of-image token (`eoi_token_index`)
takes a learned embedding of its own in transformers; a prompt holding it is refused (text
prompts never do). The SigLIP vision tower beside it is the image-to-video pipeline's.

    encoder = T5Gemma2TextModel(config, device=device)
    encoder.load_state_dict(t5gemma2_text_weights(state))
    states = encoder.encode(input_ids, attention_mask)   # one (1, n, hidden) per prompt
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np

from gpucore import Device
from gpustd import Tensor

from .llm import LLMTextModel

__all__ = ["T5Gemma2TextModel", "t5gemma2_text_config", "t5gemma2_text_weights"]

_T = TypeVar("_T")
# transformers' T5Gemma2EncoderLayer norms under LLMDecoderLayer's (Gemma 3's) names
_RENAMES = {".pre_self_attn_layernorm.": ".input_layernorm.",
            ".post_self_attn_layernorm.": ".post_attention_layernorm."}
_EOI = 256_000  # T5Gemma2Encoder's eoi_token_index
_OTHERS = ("vision_tower.", "multi_modal_projector.")  # the image path's tensors


def t5gemma2_text_config(config: dict[str, Any]) -> dict[str, Any]:
    """LLMTextModel's config of a T5Gemma2Encoder `config.json` (its `text_config`) or of the
    text config itself; ValueError for another model's."""
    kind = config.get("model_type")
    text = config.get("text_config") if kind in ("t5gemma2_encoder", "t5gemma2") else config
    if kind == "t5gemma2" and isinstance(config.get("encoder"), dict):
        text = config["encoder"].get("text_config")
    if not isinstance(text, dict) or text.get("model_type", "t5gemma2_text") != "t5gemma2_text":
        raise ValueError(f"the text encoder's config.json is a {kind!r} model's; this encoder "
                         "reads T5Gemma 2's (T5Gemma2Encoder, model_type t5gemma2_encoder)")
    return {**text, "model_type": "t5gemma2_text"}


def t5gemma2_text_weights(state: Mapping[str, _T]) -> dict[str, _T]:
    """The text model's tensors of a T5Gemma2Encoder state (`text_model.layers.0...`, or
    `layers.0...` as transformers 5 saves it) under LLMTextModel's names
    (`layers.0.input_layernorm.weight`, ...); the vision tower, the projector and the
    end-of-image embedding left out."""
    out = {}
    for key, value in state.items():
        if key.startswith(_OTHERS) or key.endswith("eoi_embedding"):
            continue
        name = key.removeprefix("text_model.")
        for old, new in _RENAMES.items():
            name = name.replace(old, new)
        out[name] = value
    return out


class T5Gemma2TextModel(LLMTextModel):
    """Token ids -> T5Gemma 2's encoder states (the final norm's output), one prompt at a
    time at its kept tokens. Config: a T5Gemma2Encoder `config.json` or its `text_config`.
    transformers: `T5Gemma2Encoder(input_ids, attention_mask).last_hidden_state`."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        super().__init__(t5gemma2_text_config(config), dtype=dtype, device=device)
        window = self.config.get("sliding_window")
        self.reach = (int(window) + 1) // 2 if self.window and window else None

    def encode(self, input_ids: Any, attention_mask: Any = None) -> list[Tensor]:
        """input_ids (B, L) ints, attention_mask (B, L) (1 kept, 0 padding; None: all kept)
        -> each prompt's states at its kept tokens, (1, n, hidden_size) float32."""
        ids = np.asarray(input_ids)
        mask = np.ones(ids.shape, bool) if attention_mask is None else (
            np.asarray(attention_mask) != 0)
        if ids.ndim != 2 or ids.dtype.kind not in "iu" or mask.shape != ids.shape:
            raise ValueError(f"input_ids must be (batch, length) integers with a mask of the "
                             f"same shape, got {ids.dtype} {ids.shape} and {mask.shape}")
        out = []
        for row, keep in zip(ids, mask, strict=True):
            kept = row[keep]
            if kept.size == 0:
                raise ValueError("a prompt keeps no token; pass the tokenizer's attention mask")
            if (kept == _EOI).any():
                raise ValueError("the prompt holds the end-of-image token (<end_of_image>), "
                                 "which only image prompts carry; remove it from the text")
            if self.reach is not None and kept.size > self.reach:
                raise ValueError(f"the prompt is {kept.size} tokens, past the {self.reach} "
                                 "that T5Gemma 2's local attention window reaches (not "
                                 "implemented); shorten the prompt")
            out.append(self.hidden_states(kept[None]))
        return out
