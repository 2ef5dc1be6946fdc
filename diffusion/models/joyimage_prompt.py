"""JoyImage Edit's prompt embedding, as diffusers' `JoyImageEditPipeline` computes it: the prompt
in a chat template (a fixed system message asking for a detailed description, the prompt as
the user's turn, the assistant's turn opened), Qwen3-VL's last decoder layer's output before
its final RMSNorm, the first 34 tokens (the system message's, counted for Qwen's tokenizer)
dropped.

    read = read_pictures(vision, [picture])  # the tower once, for the prompt and the negative
    states = encode_with_pictures(text_encoder, tokenizer, "make it night", read)
    states = encode_text(text_encoder, tokenizer, "a red circle")  # no picture: txt2img

With pictures (`encode_with_pictures`, diffusers' `encode_prompt_multiple_images`; the Plus
pipeline's several) the user's turn opens with `<|vision_start|><|image_pad|><|vision_end|>`
for each, its pad repeated once per token of its picture, whose vision tokens
(qwen3_vision.py) take the pads' places and whose deepstack features join the first decoder
layers (qwen21_prompt.read_ids); the last 4096 states are kept. Without one (`encode_text`,
diffusers' `encode_prompt`) the templated prompt is cut to 2048 + 34 tokens. One prompt a
call: diffusers pads a batch without masking its padding from the transformer, so only single
prompts are its pictures.
"""

from __future__ import annotations

import typing

import numpy as np

from ..text.llm_tokenizer import LLMTokenizer
from .llm import LLMTextModel
from .qwen21_prompt import ReadPictures, read_ids
from .qwen_vl_prompt import expand_image_pads

__all__ = ["DROP", "TEXT_TEMPLATE", "encode_text", "encode_with_pictures", "picture_template"]

# the backslash and n are characters of the template, as diffusers writes them
_SYSTEM = ("<|im_start|>system\n \\nDescribe the image by detailing the color, shape, size, "
           "texture, quantity, text, spatial relationships of the objects and background:"
           "<|im_end|>\n")
TEXT_TEMPLATE = _SYSTEM + "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
_SLOT = "<|vision_start|><|image_pad|><|vision_end|>"
DROP = 34  # diffusers' prompt_template_encode_start_idx: the system message's tokens
TEXT_TOKENS = 2048  # diffusers' text_token_max_length (prompts without a picture)
PICTURE_TOKENS = 4096  # diffusers' max_sequence_length (the states kept, from the end)
_PAD = "<|image_pad|>"


def _checked(tokenizer: LLMTokenizer, prompt: str, tokens: tuple[str, ...]) -> None:
    if not isinstance(prompt, str):
        raise ValueError(f"the prompt must be one string, got {type(prompt).__name__}")
    for token in tokens:
        if tokenizer.tokenizer.token_to_id(token) is None:
            raise ValueError(f"the tokenizer has no {token} token: JoyImage reads prompts "
                             "with Qwen3-VL's tokenizer; give the folder's own tokenizer/")
    if _PAD in prompt or "<image>\n" in prompt:
        raise ValueError(f"the prompt holds {_PAD!r} or '<image>' and a newline, the "
                         "picture's slot; remove it from the prompt")


def encode_text(text_encoder: LLMTextModel, tokenizer: LLMTokenizer, prompt: str
                ) -> np.ndarray:
    """The states (L, hidden) float32 of `prompt` read without a picture. diffusers:
    `JoyImageEditPipeline.encode_prompt(prompt)` (its `_get_qwen_prompt_embeds`)."""
    _checked(tokenizer, prompt, ("<|im_start|>",))
    ids, mask = tokenizer([TEXT_TEMPLATE.format(prompt)], TEXT_TOKENS + DROP,
                          padding="longest")
    states = text_encoder.hidden_states(ids, mask, layer=-1, final_norm=False).numpy()
    return states[0, DROP:].astype(np.float32)  # type: ignore[no-any-return]


def picture_template(count: int) -> str:
    """The template of a prompt read with `count` pictures, `{}` the prompt's place."""
    user = "<|im_start|>user\n" + _SLOT * count
    return _SYSTEM + user + "{}<|im_end|>\n<|im_start|>assistant\n"


def encode_with_pictures(text_encoder: LLMTextModel, tokenizer: LLMTokenizer, prompt: str,
                         read: ReadPictures) -> np.ndarray:
    """The states (L, hidden) float32 of `prompt` read with the pictures `read` holds
    (qwen21_prompt.read_pictures's), in order. diffusers: `JoyImageEditPipeline.
    encode_prompt_multiple_images(prompt, images=picture)`, JoyImageEditPlusPipeline's with
    its pictures."""
    _checked(tokenizer, prompt, ("<|im_start|>", "<|vision_start|>", _PAD))
    grids, merge, features = read
    text = expand_image_pads(picture_template(len(grids)).format(prompt), grids, merge=merge)
    ids, _ = tokenizer([text], 1 << 30, padding="longest")
    pad = typing.cast(int, tokenizer.tokenizer.token_to_id(_PAD))  # checked above
    states = read_ids(text_encoder, ids[0], pad, grids, merge, features)[DROP:]
    return states[-PICTURE_TOKENS:]
