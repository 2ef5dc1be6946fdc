"""Sana's prompt encoding (Sana 1.0/1.5 and Sana Sprint), as diffusers' `SanaPipeline
.encode_prompt` computes it: the prompt lower-cased and stripped, behind Sana's "complex
human instruction" (its lines joined by newlines; Section 3.1 of the Sana paper), Gemma's
tokens (<bos> first) right-padded to the instruction's length plus max_sequence_length - 2,
Gemma 2's last hidden states (after its final norm) with the padding mask, of which the first
token (<bos>) and the last max_sequence_length - 1 are kept. A negative prompt goes in
without the instruction, max_sequence_length tokens.

    states, mask = encode(text_model, tokenizer, ["a fox in the snow"])
    negative, negative_mask = encode(text_model, tokenizer, [""], instruction=())

`padded=False` keeps only real tokens (the batch's longest, padded with masked rows), which
gives the same conditioning: Gemma 2 is causal, so a real token's states do not depend on
the padding after it, and Sana's transformer reads the caption through masked
cross-attention alone (no positions), so a padded row is never read and the rows' order
does not matter.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ..text.llm_tokenizer import LLMTokenizer
from .llm import LLMTextModel

__all__ = ["COMPLEX_HUMAN_INSTRUCTION", "encode"]

# SanaPipeline's (and SanaSprintPipeline's) default `complex_human_instruction`
COMPLEX_HUMAN_INSTRUCTION = (
    "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual "
    "descriptions suitable for image generation. Evaluate the level of detail in the user "
    "prompt:",
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, "
    "textures, and spatial relationships to create vivid and concrete scenes.",
    "- If the prompt is already detailed, refine and enhance the existing details slightly "
    "without overcomplicating.",
    "Here are examples of how to transform or refine prompts:",
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a "
    "round shape, sleeping peacefully on a warm sunny windowsill, surrounded by pots of "
    "blooming red flowers.",
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, "
    "featuring glowing street lamps, a diverse crowd of people in colorful clothing, and a "
    "double-decker bus passing by towering glass skyscrapers.",
    "Please generate only the enhanced description for the prompt below and avoid including "
    "any additional commentary or evaluations:",
    "User Prompt: ",
)


def encode(text_model: LLMTextModel, tokenizer: LLMTokenizer, prompts: Sequence[str], *,
           max_sequence_length: int = 300,
           instruction: Sequence[str] = COMPLEX_HUMAN_INSTRUCTION, padded: bool = True
           ) -> tuple[np.ndarray, np.ndarray]:
    """Sana's text conditioning of `prompts`: states (B, L, hidden) float32 and mask (B, L)
    int64 (1 a real token), L = max_sequence_length (or, `padded=False`, the longest prompt's
    kept tokens: the module's docstring says why that changes nothing). `instruction`: the
    lines put before each prompt (empty for a negative prompt). A prompt cut at the length,
    with a warning. ValueError for a text encoder other than Gemma 2 or a bad length.
    diffusers: `SanaPipeline.encode_prompt(prompts, do_classifier_free_guidance=False,
    max_sequence_length=, complex_human_instruction=)[:2]`."""
    if isinstance(max_sequence_length, bool) or not isinstance(max_sequence_length, int) or (
            max_sequence_length < 2):
        raise ValueError(f"max_sequence_length must be an integer of at least 2, got "
                         f"{max_sequence_length!r}")
    kind = text_model.config.get("model_type")
    if kind != "gemma2":
        raise ValueError(f"Sana reads prompts with Gemma 2 (gemma2), got a {kind!r} text "
                         "encoder: give the folder's own text_encoder/")
    for prompt in prompts:
        if not isinstance(prompt, str):
            raise ValueError(f"prompts must be strings, got {type(prompt).__name__}")
    # diffusers' _text_preprocessing without clean_caption
    texts = [p.lower().strip() for p in prompts]
    length = max_sequence_length
    if instruction:
        prefix = "\n".join(instruction)
        texts = [prefix + t for t in texts]
        # the instruction's tokens with <bos>, less <bos> and the one the first kept row takes
        length = len(tokenizer.tokenizer.encode(prefix).ids) + max_sequence_length - 2
    for text in texts:
        count = len(tokenizer.tokenizer.encode(text).ids)
        if count > length:
            warnings.warn(f"a prompt is {count - length} tokens past Sana's "
                          f"max_sequence_length ({max_sequence_length}); its end is cut off",
                          stacklevel=3)
    # SanaPipeline pads on the right, whatever the tokenizer's config says
    tokenizer.padding_side = "right"
    ids, mask = tokenizer(texts, length, padding="max_length" if padded else "longest")
    states = text_model.hidden_states(ids, mask, layer=-1).numpy().astype(np.float32)
    # Section 3.1: <bos> and the last max_sequence_length - 1 rows of the padded length
    start = length - (max_sequence_length - 1)
    if padded:
        return (np.concatenate([states[:, :1], states[:, start:]], axis=1),
                np.concatenate([mask[:, :1], mask[:, start:]], axis=1))
    counts = 1 + np.maximum(mask.sum(axis=1) - start, 0)
    out = np.zeros((len(texts), int(counts.max()), states.shape[2]), np.float32)
    kept = np.zeros((len(texts), out.shape[1]), np.int64)
    for row, count in enumerate(counts):
        out[row, 0], kept[row, :count] = states[row, 0], 1
        out[row, 1:count] = states[row, start:start + count - 1]
    return out, kept
