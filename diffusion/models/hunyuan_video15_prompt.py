"""HunyuanVideo 1.5's two prompt encoders, as diffusers' HunyuanVideo15Pipeline runs them:
Qwen2.5-VL's states of the prompt as a chat (HunyuanVideo 1.5's describe-the-video system
message, the prompt as the user's turn, the assistant's turn opened), its third last hidden
state with the first 108 tokens dropped, 1000 kept at most; and the glyph encoder: the
prompt's double-quoted texts (`extract_glyph_texts`) as 'Text "...". ' read by ByT5
(hunyuanimage_prompt's tokenizer and encoder), 256 tokens with their mask. Both come padded
to diffusers' fixed lengths with diffusers' masks; Qwen's padded rows are zeros here (diffusers
computes states there, which the mask keeps every attention from reading).

    states, mask = qwen_video_states(qwen, tokenizer, ["a cat walks on the grass"])
    glyph, glyph_mask = video_glyph_states(byt5, ByT5Tokenizer.from_dir(path), prompt)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..text.llm_tokenizer import LLMTokenizer
from .hunyuanimage_prompt import ByT5Tokenizer, glyph_states
from .llm import LLMTextModel
from .t5 import T5EncoderModel

__all__ = ["CROP_START", "GLYPH_TOKENS", "SYSTEM_MESSAGE", "TEXT_TOKENS", "chat_prompt",
           "extract_glyph_texts", "qwen_video_states", "video_glyph_states"]

# the pipeline's system message, its runs of spaces included (diffusers writes it over
# backslash-continued lines, whose indentation lands in the string)
SYSTEM_MESSAGE = (" " * 8).join([
    "You are a helpful assistant. Describe the video by detailing the following aspects: ",
    "1. The main content and theme of the video. ",
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the "
    "objects. ",
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the "
    "objects. ",
    "4. background environment, light, style and atmosphere. ",
    "5. camera angles, movements, and transitions used in the video."])
CROP_START = 108  # the leading tokens whose states are dropped (the chat up to the prompt)
TEXT_TOKENS = 1000  # the states kept at most (diffusers' tokenizer_max_length)
SKIP_LAYERS = 2  # Qwen2.5-VL's last layers not read: hidden_states[-(2 + 1)]
GLYPH_TOKENS = 256  # ByT5's tokens, padded or cut to this
_QUOTES = re.compile(r"\"(.*?)\"|“(.*?)”")


def chat_prompt(prompt: str) -> str:
    """The system message and `prompt` (" " for an empty one) as Qwen2.5-VL's chat template
    renders them, the assistant's turn opened. transformers: `tokenizer.apply_chat_template(
    [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": prompt}],
    tokenize=False, add_generation_prompt=True)`."""
    return (f"<|im_start|>system\n{SYSTEM_MESSAGE}<|im_end|>\n<|im_start|>user\n"
            f"{prompt or ' '}<|im_end|>\n<|im_start|>assistant\n")


def extract_glyph_texts(prompt: str) -> str | None:
    """The texts `prompt` puts in straight or Chinese double quotes, in order, repeats dropped,
    as 'Text "a". Text "b". '; None where it quotes none. diffusers:
    `pipeline_hunyuan_video1_5.extract_glyph_texts`."""
    texts = list(dict.fromkeys(a or b for a, b in _QUOTES.findall(prompt)))
    return ". ".join(f'Text "{text}"' for text in texts) + ". " if texts else None


def video_glyph_states(encoder: T5EncoderModel, tokenizer: ByT5Tokenizer, prompt: str
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(1, 256, d_model) float32 states and (1, 256) mask of `prompt`'s quoted texts through
    ByT5; zeros and a zero mask where it quotes nothing. diffusers:
    `HunyuanVideo15Pipeline._get_byt5_prompt_embeds`."""
    return glyph_states(encoder, tokenizer, prompt, extract=extract_glyph_texts,
                        length=GLYPH_TOKENS)


def qwen_video_states(encoder: LLMTextModel, tokenizer: LLMTokenizer, prompts: Sequence[str]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(B, 1000, hidden) float32 states of `prompts` and their (B, 1000) int64 mask:
    Qwen2.5-VL's hidden_states[-3] of each chat (`chat_prompt`, cut to 1108 tokens) from token
    108 on, zeros past its end. Each prompt runs alone, unpadded: the encoder is causal, so
    the padding diffusers appends changes no real token's state. diffusers:
    `HunyuanVideo15Pipeline._get_mllm_prompt_embeds`."""
    states = np.zeros((len(prompts), TEXT_TOKENS, encoder.config["hidden_size"]), np.float32)
    mask = np.zeros((len(prompts), TEXT_TOKENS), np.int64)
    for row, prompt in enumerate(prompts):
        ids, _ = tokenizer([chat_prompt(prompt)], TEXT_TOKENS + CROP_START, padding="longest",
                           add_special_tokens=False)
        kept = ids.shape[1] - CROP_START
        if kept <= 0:
            continue  # diffusers keeps padding alone: every row masked
        hidden = encoder.hidden_states(ids, layer=-(SKIP_LAYERS + 1)).numpy()
        states[row, :kept], mask[row, :kept] = hidden[0, CROP_START:], 1
    return states, mask
