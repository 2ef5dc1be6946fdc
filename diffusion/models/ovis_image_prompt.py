"""Ovis-Image's prompt tokens, as diffusers' OvisImagePipeline makes them: the prompt after a
fixed captioning instruction in one user message of Qwen3's chat template (thinking off),
tokenized, cut or padded to 256 + 28 tokens; the text encoder's states of the first 28 places
(the template's opening and the instruction, with Ovis' tokenizer) are dropped after it, the
padding's zeroed. Every one of the 256 places reaches the transformer (padding included,
unmasked), at positions (0, i, i); image patches at (0, row, column).

    ids, mask = prompt_tokens(tokenizer, ["a sign that says OPEN"])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..text.llm_tokenizer import LLMTokenizer, qwen3_chat_prompt

__all__ = ["DROPPED_TOKENS", "SYSTEM_PROMPT", "TEXT_TOKENS", "prompt_tokens", "templated"]

SYSTEM_PROMPT = ("Describe the image by detailing the color, quantity, text, shape, size, "
                 "texture, spatial relationships of the objects and background: ")
TEXT_TOKENS = 256  # diffusers' max_sequence_length (its largest): the states kept
DROPPED_TOKENS = 28  # diffusers' user_prompt_begin_id: the template's places dropped


def templated(prompt: str) -> str:
    """The text the tokenizer reads for `prompt`. diffusers: `OvisImagePipeline._get_messages`
    (`apply_chat_template` of one user message, SYSTEM_PROMPT before the prompt,
    add_generation_prompt=True, enable_thinking=False)."""
    return qwen3_chat_prompt(SYSTEM_PROMPT + prompt, enable_thinking=False)


def prompt_tokens(tokenizer: LLMTokenizer, prompts: Sequence[str]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(ids, attention mask), each (B, TEXT_TOKENS + DROPPED_TOKENS): the templated prompts
    cut or padded to that length on the tokenizer's padding side, no special tokens added.
    diffusers: `OvisImagePipeline._get_ovis_prompt_embeds`' tokenizer call."""
    return tokenizer([templated(p) for p in prompts], TEXT_TOKENS + DROPPED_TOKENS,
                     add_special_tokens=False)
