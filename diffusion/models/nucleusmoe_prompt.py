"""NucleusMoE-Image's prompt encoding, as diffusers' `NucleusMoEImagePipeline.encode_prompt`
computes it for one prompt: the prompt as the user's turn after a fixed system message in
Qwen3-VL's chat template (the assistant's turn opened), tokenized, cut to max_sequence_length
tokens and padded to a multiple of 8 on the tokenizer's padding side; Qwen3-VL's language
model's hidden_states[-8] (the output of its 8th layer from the end) are the states, the
padding masked as keys in the transformer.

    states, mask = encode(text_model, tokenizer, "a cat holding a sign")

Only the real tokens run through the text encoder: a real token attends to real tokens alone
(the padding is masked) at positions counting real tokens alone (transformers numbers them
from the mask), so the unpadded sequence gives its states exactly; the padded rows are zeros,
where diffusers' are the pad tokens' states, which the transformer masks as keys and never
reads otherwise (it has no text queries). The padded block keeps each real token at its place,
which sets its rotary position in the transformer.
"""

from __future__ import annotations

import numpy as np

from ..text.llm_tokenizer import LLMTokenizer
from .llm import LLMTextModel

__all__ = ["MAX_SEQUENCE_LENGTH", "RETURN_INDEX", "SYSTEM_PROMPT", "encode", "templated",
           "tokenize"]

SYSTEM_PROMPT = ("You are an image generation assistant. Follow the user's prompt literally. "
                 "Pay careful attention to spatial layout: objects described as on the left "
                 "must appear on the left, on the right on the right. Match exact object counts "
                 "and assign colors to the correct objects.")
RETURN_INDEX = -8  # diffusers' default_return_index: hidden_states[-8]
MAX_SEQUENCE_LENGTH = 1024  # diffusers' default_max_sequence_length
_MULTIPLE = 8  # the processor's pad_to_multiple_of


def templated(prompt: str) -> str:
    """The text the tokenizer reads for `prompt`. diffusers: `_format_prompt` (Qwen3-VL's
    `apply_chat_template` of the system message and the prompt as a text part,
    add_generation_prompt=True)."""
    return (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{prompt}"
            "<|im_end|>\n<|im_start|>assistant\n")


def tokenize(tokenizer: LLMTokenizer, prompt: str,
             max_sequence_length: int = MAX_SEQUENCE_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """ids (1, L) int64 and mask (1, L) bool of the templated prompt cut to
    max_sequence_length tokens, L its length rounded up to a multiple of 8, the padding on
    the tokenizer's side. ValueError for a tokenizer that is not Qwen's or a bad length.
    transformers: `Qwen3VLProcessor(text=, padding="longest", pad_to_multiple_of=8,
    max_length=, truncation=True)`."""
    if not isinstance(prompt, str):
        raise ValueError(f"the prompt must be a string, got {type(prompt).__name__}")
    if isinstance(max_sequence_length, bool) or not isinstance(max_sequence_length, int) or (
            max_sequence_length < 1):
        raise ValueError(f"max_sequence_length must be a positive integer, got "
                         f"{max_sequence_length!r}")
    for token in ("<|im_start|>", "<|im_end|>"):
        if tokenizer.tokenizer.token_to_id(token) is None:
            raise ValueError(f"the tokenizer has no {token} token: NucleusMoE-Image reads "
                             "prompts with Qwen3-VL's tokenizer (the folder's processor/)")
    ids, mask = tokenizer([templated(prompt)], max_sequence_length, padding="longest")
    real = ids[mask.astype(bool)]
    length = -(-len(real) // _MULTIPLE) * _MULTIPLE
    block = np.full((1, length), tokenizer.pad_id, np.int64)
    keep = np.zeros((1, length), bool)
    span = (slice(length - len(real), length) if tokenizer.padding_side == "left"
            else slice(0, len(real)))
    block[0, span], keep[0, span] = real, True
    return block, keep


def encode(text_model: LLMTextModel, tokenizer: LLMTokenizer, prompt: str, *,
           max_sequence_length: int = MAX_SEQUENCE_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """NucleusMoE-Image's text conditioning of `prompt`: states (1, L, hidden) float32 and
    mask (1, L) bool (tokenize's block; padded rows zero). ValueError for a text encoder
    other than Qwen3-VL's, or one too shallow for hidden_states[-8]. diffusers:
    `NucleusMoEImagePipeline.encode_prompt(prompt)` (one image)."""
    kind = text_model.config.get("model_type")
    if kind != "qwen3_vl_text":
        raise ValueError(f"NucleusMoE-Image reads prompts with Qwen3-VL's language model "
                         f"(qwen3_vl_text), got a {kind!r} text encoder")
    depth = len(text_model.layers)
    if depth + 1 < -RETURN_INDEX:
        raise ValueError(f"NucleusMoE-Image reads hidden_states[{RETURN_INDEX}], which this "
                         f"{depth}-layer text encoder does not have; give the folder's own")
    ids, mask = tokenize(tokenizer, prompt, max_sequence_length)
    states = text_model.hidden_states_of(ids[mask][None], None, [RETURN_INDEX])[0]
    block = np.zeros((*mask.shape, states.shape[-1]), np.float32)
    block[mask] = states.numpy()[0].astype(np.float32)
    return block, mask
