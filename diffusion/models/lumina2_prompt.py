"""Lumina Image 2.0's prompt encoding, as diffusers' `Lumina2Pipeline.encode_prompt` computes
it: the prompt after Lumina 2's system prompt (`SYSTEM_PROMPT + " <Prompt Start> " +
prompt`; a negative prompt goes in as it is, without one), Gemma's tokens (<bos> first)
truncated to `max_sequence_length` (256, at most 512) and right-padded, and Gemma 2's
second-to-last hidden states (transformers' `hidden_states[-2]`) with the padding mask.

    states, mask = encode(text_model, tokenizer, [lumina2_prompt("a fox in the snow")])

diffusers pads every prompt to max_sequence_length; `padded=False` pads to the batch's
longest prompt only, which gives the same conditioning: Gemma 2 is causal, so a real token's
states do not depend on the padding after it, and Lumina2Transformer2DModel never reads a
padded row (its caption refiner takes the mask as a key padding mask, and only the first
`mask.sum()` caption rows join the image's tokens), so a 20-token prompt runs 20 tokens
through Gemma 2 instead of 256.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ..text.llm_tokenizer import LLMTokenizer
from .llm import LLMTextModel

__all__ = ["MAX_SEQUENCE_LENGTH", "SYSTEM_PROMPT", "TEXT_LAYER", "encode", "lumina2_prompt"]

# Lumina2Pipeline.system_prompt, the instruction Lumina Image 2.0 was trained behind
SYSTEM_PROMPT = ("You are an assistant designed to generate superior images with the superior "
                 "degree of image-text alignment based on textual prompts or user prompts.")
MAX_SEQUENCE_LENGTH = 512  # Lumina2Pipeline.check_inputs refuses more
TEXT_LAYER = -2  # the hidden states Lumina 2 reads: Gemma 2's second-to-last layer's output


def lumina2_prompt(prompt: str, system_prompt: str | None = None) -> str:
    """The text Gemma 2 reads for a prompt: the system prompt (Lumina 2's unless given),
    " <Prompt Start> ", the prompt. diffusers: what `Lumina2Pipeline.encode_prompt` makes of
    `prompt` and `system_prompt`."""
    if not isinstance(prompt, str):
        raise ValueError(f"the prompt must be a string, got {type(prompt).__name__}")
    return f"{SYSTEM_PROMPT if system_prompt is None else system_prompt} <Prompt Start> {prompt}"


def encode(text_model: LLMTextModel, tokenizer: LLMTokenizer, texts: Sequence[str], *,
           max_sequence_length: int = 256, padded: bool = True
           ) -> tuple[np.ndarray, np.ndarray]:
    """Lumina 2's text conditioning of `texts` (already templated: `lumina2_prompt`; a
    negative prompt as it is): states (B, L, hidden) float32 and mask (B, L) int64 (1 a real
    token), L = max_sequence_length, or with `padded=False` the longest text's token count
    (the module's docstring says why that changes nothing). A text past max_sequence_length
    tokens is cut, with a warning. ValueError for a text encoder other than Gemma 2 or a
    length past 512. diffusers: `Lumina2Pipeline._get_gemma_prompt_embeds(texts,
    max_sequence_length=)`."""
    if isinstance(max_sequence_length, bool) or not isinstance(max_sequence_length, int) or (
            not 1 <= max_sequence_length <= MAX_SEQUENCE_LENGTH):
        raise ValueError(f"max_sequence_length must be an integer from 1 to "
                         f"{MAX_SEQUENCE_LENGTH}, got {max_sequence_length!r}")
    kind = text_model.config.get("model_type")
    if kind != "gemma2":
        raise ValueError(f"Lumina Image 2.0 reads prompts with Gemma 2 (gemma2), got a {kind!r} "
                         "text encoder: give the folder's own text_encoder/")
    texts = list(texts)
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"prompts must be strings, got {type(text).__name__}")
        count = len(tokenizer.tokenizer.encode(text).ids)
        if count > max_sequence_length:
            warnings.warn(f"a prompt is {count - max_sequence_length} tokens past Lumina 2's "
                          f"max_sequence_length ({max_sequence_length}); its end is cut off",
                          stacklevel=3)
    # Lumina2Pipeline sets the tokenizer's padding side to the right, whatever the folder says
    tokenizer.padding_side = "right"
    ids, mask = tokenizer(texts, max_sequence_length,
                          padding="max_length" if padded else "longest")
    states = text_model.hidden_states(ids, mask, layer=TEXT_LAYER)
    return states.numpy().astype(np.float32), mask
