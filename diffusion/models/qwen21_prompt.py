"""Qwen-Image 2.1's prompt embedding for prompts of text alone, as diffusers'
`QwenImage21Pipeline.encode_prompt(prompt)` (no condition images) computes it: each prompt in
the text-to-image template (a fixed system message, the prompt as the user's turn, the
assistant's turn opened), the batch left-padded, Qwen3-VL's last decoder layer's output before
its final RMSNorm, each prompt's own tokens after the system message's kept, zero-padded on
the right to the longest.

    embeds, mask, image_pad_mask = encode_t2i(text_encoder, tokenizer, ["a red circle"])
    img_mask = joint_img_mask(image_pad_mask, latent_tokens=(height // 16) * (width // 16))

What the transformer then reads: `encoder_hidden_states` = embeds (B, L, hidden) float32,
`encoder_hidden_states_mask` = mask (B, L) int64 (1 a prompt token, 0 padding; None when no
prompt is padded) and `img_mask` = joint_img_mask's (B, L + latent_tokens / 4) bool (False at
text, True at the target picture's slots, one per 2x2 latent tokens).

Condition images (the image-to-image template, `<|image_pad|>` runs) are not handled: they
need Qwen3-VL's vision tower, its tokens in place of the pads at Qwen3-VL's multimodal
positions (LLMTextModel.multimodal_hidden_states with the interleaved rotary), and its
"deepstack" features (three intermediate vision layers' merged outputs added to the first
three decoder layers' outputs at the image positions), none of which is here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..text.llm_tokenizer import LLMTokenizer
from .llm import LLMTextModel

__all__ = ["SYSTEM_MESSAGE", "T2I_TEMPLATE", "encode_t2i", "joint_img_mask", "tokenize_t2i"]

SYSTEM_PROMPT = "Comprehend and analyze the provided prompt."
# Qwen3-VL's chat template renders a system message so; its tokens are dropped from the states
SYSTEM_MESSAGE = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
T2I_TEMPLATE = SYSTEM_MESSAGE + "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
IMAGE_PAD = "<|image_pad|>"


def tokenize_t2i(tokenizer: LLMTokenizer, prompts: Sequence[str], *, max_length: int = 4096
                 ) -> tuple[np.ndarray, np.ndarray, int]:
    """The templated prompts' ids and mask (B, L) int64, padded on the left to the longest
    (the pipeline pads so whatever the tokenizer's side: the side sets the positions a
    shorter prompt's tokens take), and the system message's token count (diffusers:
    `_drop_idx`). An empty prompt reads as " " (Qwen has no BOS token to read). ValueError
    for a templated prompt past `max_length` tokens (diffusers never truncates) or a prompt
    holding an image slot. transformers: `Qwen3VLProcessor(text=, padding=True,
    padding_side="left")`."""
    if isinstance(prompts, str) or not prompts:
        raise ValueError("prompts must be a non-empty list of strings")
    for token in ("<|im_start|>", "<|im_end|>"):
        if tokenizer.tokenizer.token_to_id(token) is None:
            raise ValueError(f"the tokenizer has no {token} token: Qwen-Image 2.1 reads "
                             "prompts with Qwen3-VL's tokenizer")
    texts = [T2I_TEMPLATE.format(p or " ") for p in prompts]
    ids, mask = tokenizer(texts, max_length + 1, padding="longest")
    system, _ = tokenizer([SYSTEM_MESSAGE], max_length, padding="longest")
    rows = [row[keep.astype(bool)] for row, keep in zip(ids, mask, strict=True)]
    longest = max(map(len, rows))
    if longest > max_length:
        raise ValueError(f"a prompt is more than {max_length} tokens with its template; "
                         "shorten it")
    pad = tokenizer.tokenizer.token_to_id(IMAGE_PAD)
    out = np.full((len(rows), longest), tokenizer.pad_id, np.int64)
    keep = np.zeros((len(rows), longest), np.int64)
    for i, row in enumerate(rows):
        if pad is not None and (row == pad).any():
            raise ValueError(f"prompt {i} holds {IMAGE_PAD}, a condition image's slot; "
                             "prompts of text alone cannot carry one")
        if not np.array_equal(row[: system.shape[1]], system[0]):
            raise ValueError("the tokenizer splits the template's system message differently "
                             "inside the prompt: give Qwen3-VL's tokenizer")
        out[i, longest - len(row):] = row
        keep[i, longest - len(row):] = 1
    return out, keep, system.shape[1]


def encode_t2i(text_encoder: LLMTextModel, tokenizer: LLMTokenizer, prompts: Sequence[str], *,
               max_length: int = 4096) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Prompt embeddings (B, L, hidden) float32, their mask (B, L) int64 (None when no
    prompt is padded) and the image-slot mask (B, L) bool (all False: text alone) of
    `prompts`; L is the longest prompt's token count past the system message. diffusers:
    `QwenImage21Pipeline.encode_prompt(prompt)` (its `_get_qwen_prompt_embeds` with the
    text encoder's final norm skipped, `_extract_masked_hidden`, `[_drop_idx:]`)."""
    ids, mask, drop = tokenize_t2i(tokenizer, prompts, max_length=max_length)
    states = text_encoder.hidden_states(ids, mask, layer=-1, final_norm=False).numpy()
    rows = [s[keep.astype(bool)][drop:] for s, keep in zip(states, mask, strict=True)]
    length = max(len(r) for r in rows)
    embeds = np.zeros((len(rows), length, states.shape[-1]), np.float32)
    keep_mask = np.zeros((len(rows), length), np.int64)
    for i, row in enumerate(rows):
        embeds[i, : len(row)] = row
        keep_mask[i, : len(row)] = 1
    return (embeds, None if keep_mask.all() else keep_mask,
            np.zeros((len(rows), length), bool))


def joint_img_mask(image_pad_mask: np.ndarray, latent_tokens: int) -> np.ndarray:
    """The transformer's `img_mask` (B, L + latent_tokens / 4) bool: `image_pad_mask` (B, L)
    followed by one True slot per 2x2 group of the target picture's `latent_tokens` (its
    latent height times width, 16 pixels a token). diffusers: QwenImage21Pipeline's
    `append_target_slots`."""
    mask = np.asarray(image_pad_mask, bool)
    if mask.ndim != 2 or latent_tokens <= 0 or latent_tokens % 4:
        raise ValueError(f"joint_img_mask needs a (batch, length) mask and a positive multiple "
                         f"of 4 latent tokens, got {mask.shape} and {latent_tokens}")
    return np.concatenate([mask, np.ones((len(mask), latent_tokens // 4), bool)], axis=1)
