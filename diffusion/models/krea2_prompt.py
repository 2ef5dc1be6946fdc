"""Krea 2's prompt encoding, as diffusers' `Krea2Pipeline.get_text_hidden_states(prompt,
max_sequence_length)` computes it: Qwen3-VL-4B's language model reads the prompt in the
Qwen-Image chat template, and the hidden states of several layers (`select_layers`, indices of
transformers' `hidden_states` tuple, 0 the embeddings) are stacked per token.

    layers = select_layers_of(model_index, num_text_layers=transformer_config["num_text_layers"])
    states, mask = encode(text_model, tokenizer, "a fox in the snow", select_layers=layers)

The pipeline's layout, a fixed block: the template's prefix and the prompt, truncated and
padded to max_sequence_length + 34 - 5 tokens, then the 5 tokens of the assistant's suffix, so
the padding sits in the middle ([prefix | prompt | PAD | suffix] with Qwen's right padding);
positions count only real tokens (cumsum of the mask - 1, equal on the three mRoPE axes); the
padding is masked as keys; the first 34 (the prefix's) tokens are dropped from states and mask.

Only the real tokens run. A real token attends to real tokens alone (padding is masked as a
key) at positions that count real tokens alone, so the unpadded sequence at positions 0..n-1
gives every real token's states exactly (what the test checks against the padded block): a
prompt of 20 tokens runs 59 tokens instead of 546. The padded rows are zeros, where diffusers'
are the states of pad tokens: Krea2Transformer2DModel never reads them. Its text fusion mixes
the tapped layers per token and its refiner and joint blocks take the text mask as a key
padding mask, so a padded row is no key of any query; its own output is dropped with the text
rows at the end; and text rows all sit at rotary position (0, 0, 0), so the rows' places change
nothing either: `padded=False` hands only the real rows, the transformer's same result from a
sequence up to 512 - n text rows shorter at every step. The rows need only be finite (a masked
key's value still meets a zero weight in the attention's sum).

A prompt past max_sequence_length is cut as diffusers cuts it, with a warning saying how much.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..text.llm_tokenizer import LLMTokenizer
from .llm import LLMTextModel

__all__ = ["PREFIX", "PREFIX_TOKENS", "SELECT_LAYERS", "SUFFIX", "encode", "select_layers_of",
           "tokenize"]

PREFIX = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, "
          "quantity, text, spatial relationships of the objects and background:<|im_end|>\n"
          "<|im_start|>user\n")
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
PREFIX_TOKENS = 34  # diffusers: prompt_template_encode_start_idx, dropped from the states
SUFFIX_TOKENS = 5  # diffusers: prompt_template_encode_num_suffix_tokens
# Krea2Pipeline's default taps of Qwen3-VL-4B's 36 layers
SELECT_LAYERS = tuple(range(2, 36, 3))


def select_layers_of(index: Mapping[str, Any], num_text_layers: int | None = None
                     ) -> tuple[int, ...]:
    """The taps of a Krea 2 folder's model_index.json (`index`, its parsed object):
    `text_encoder_select_layers` (Krea2Pipeline registers it there), SELECT_LAYERS where absent.
    ValueError unless they are integers, as many as the transformer's `num_text_layers`."""
    layers = index.get("text_encoder_select_layers")
    if layers is None:
        layers = SELECT_LAYERS
    if (not isinstance(layers, (list, tuple)) or not layers
            or not all(isinstance(k, int) and not isinstance(k, bool) for k in layers)):
        raise ValueError(f"model_index.json's text_encoder_select_layers must be a list of "
                         f"layer numbers, got {str(layers)[:80]}")
    if num_text_layers is not None and len(layers) != num_text_layers:
        raise ValueError(f"model_index.json taps {len(layers)} text encoder layers but the "
                         f"transformer reads {num_text_layers} (num_text_layers): give the "
                         "folder's own transformer")
    return tuple(layers)


def tokenize(tokenizer: LLMTokenizer, prompt: str, max_sequence_length: int = 512
             ) -> tuple[np.ndarray, np.ndarray]:
    """The pipeline's whole block: ids (1, max_sequence_length + 34) int64 and mask (same
    shape) bool, the prefix and prompt truncated and padded on the tokenizer's side to
    max_sequence_length + 29 tokens, the suffix after them. A truncated prompt warns (diffusers
    cuts it silently); ValueError for a tokenizer that is not Qwen's. transformers:
    `tokenizer([PREFIX + prompt], truncation=True, padding="max_length", max_length=)` and
    `tokenizer([SUFFIX])` concatenated."""
    if not isinstance(prompt, str):
        raise ValueError(f"the prompt must be a string, got {type(prompt).__name__}")
    if isinstance(max_sequence_length, bool) or not isinstance(max_sequence_length, int) or (
            max_sequence_length < 1):
        raise ValueError(f"max_sequence_length must be a positive integer, got "
                         f"{max_sequence_length!r}")
    for token in ("<|im_start|>", "<|im_end|>"):
        if tokenizer.tokenizer.token_to_id(token) is None:
            raise ValueError(f"the tokenizer has no {token} token: Krea 2 reads prompts with "
                             "Qwen3-VL's tokenizer (the folder's tokenizer/)")
    prefix, _ = tokenizer([PREFIX], 4 * PREFIX_TOKENS, padding="longest")
    if prefix.shape[1] != PREFIX_TOKENS:
        raise ValueError(f"the tokenizer splits Krea 2's template into {prefix.shape[1]} "
                         f"tokens, not {PREFIX_TOKENS}: give Qwen3-VL's tokenizer")
    length = max_sequence_length + PREFIX_TOKENS - SUFFIX_TOKENS
    text = PREFIX + prompt
    count = len(tokenizer.tokenizer.encode(text).ids)
    if count > length:
        warnings.warn(f"the prompt is {count - length} tokens past Krea 2's "
                      f"max_sequence_length ({max_sequence_length}); its end is cut off",
                      stacklevel=3)
    ids, mask = tokenizer([text], length)
    suffix, suffix_mask = tokenizer([SUFFIX], 4 * SUFFIX_TOKENS, padding="longest")
    return (np.concatenate([ids, suffix], axis=1),
            np.concatenate([mask, suffix_mask], axis=1).astype(bool))


def encode(text_model: LLMTextModel, tokenizer: LLMTokenizer, prompt: str, *,
           select_layers: Sequence[int] = SELECT_LAYERS, max_sequence_length: int = 512,
           padded: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Krea 2's text conditioning of `prompt`: states (1, L, len(select_layers), hidden)
    float32 and mask (1, L) bool, L = max_sequence_length, padded rows zero (see the module's
    docstring for why the transformer's result is diffusers'); `padded=False`: only the real
    tokens (L their count, the mask all True). ValueError for a text encoder other than
    Qwen3-VL's or taps past its depth. diffusers: `Krea2Pipeline(text_encoder_select_layers=)
    .get_text_hidden_states(prompt, max_sequence_length)` (`encode_prompt`'s, one image)."""
    kind = text_model.config.get("model_type")
    if kind != "qwen3_vl_text":
        raise ValueError(f"Krea 2 reads prompts with Qwen3-VL's language model "
                         f"(qwen3_vl_text), got a {kind!r} text encoder")
    depth = len(text_model.layers)
    layers = list(select_layers)
    if not layers or not all(-depth - 1 <= k <= depth for k in layers):
        raise ValueError(f"text_encoder_select_layers {layers} must name hidden states 0 .. "
                         f"{depth} of this {depth}-layer text encoder")
    ids, mask = tokenize(tokenizer, prompt, max_sequence_length)
    # the real tokens alone, at positions 0..n-1: what cumsum(mask) - 1 gives them
    states = text_model.hidden_states_of(ids[mask][None], None, layers)
    real = np.stack([s.numpy()[0] for s in states], axis=1).astype(np.float32)  # (n, taps, D)
    kept = mask[0].copy()
    kept[:PREFIX_TOKENS] = False
    if not padded:
        rows = real[kept[mask[0]]]
        return rows[None], np.ones((1, len(rows)), bool)
    block = np.zeros((mask.shape[1], *real.shape[1:]), np.float32)
    block[mask[0]] = real
    return block[None, PREFIX_TOKENS:], mask[:, PREFIX_TOKENS:]
