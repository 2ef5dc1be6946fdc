"""HunyuanVideo's prompt encoding, as diffusers' `HunyuanVideoPipeline.encode_prompt(prompt,
max_sequence_length=256)` computes it: LLaVA-Llama-3-8B's language model (a `LlamaModel`)
reads each prompt in the pipeline's `DEFAULT_PROMPT_TEMPLATE` (a Llama 3 chat: a system
message asking for the video's details, the prompt as the user's), padded on the right to
95 + max_sequence_length tokens; its hidden states two layers before the last (the output of
layer L - 2, no final norm: `hidden_states[-3]`) with the first 95 (`CROP_START`, the
template's part before the prompt) dropped are the text tokens, beside the attention mask of
the same positions (1 for a token, 0 for padding). CLIP ViT-L/14's pooled output
(`pooler_output` of a CLIPTextModel, 77 tokens) of the prompt is the transformer's
`pooled_projections`.

    states, mask = llama_states(llama, llama_tokenizer, ["a cat walks on the grass"])
    # states (1, 256, 4096) float32, mask (1, 256) int64
    pooled = clip_pooled(clip, clip_tokenizer, ["a cat walks on the grass"])  # (1, 768)

Every prompt of a batch is padded to the same length, as diffusers pads them (its
`padding="max_length"`), so a batch's rows are each prompt's own: the padding is on the
right and Llama's attention causal, so no token of the prompt sees it, and the transformer
masks it. CLIP runs BOS .. EOS only (its causal attention, the pooled output the EOS
token's: models.kandinsky5_prompt says why that is diffusers' value exactly).

A prompt past max_sequence_length tokens is cut as diffusers' tokenizer cuts it (the
templated text's tokens past 95 + max_sequence_length dropped, its closing <|eot_id|> with
them), with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..text.llm_tokenizer import LLMTokenizer
from ..text.tokenizer import CLIPTokenizer
from .clip import CLIPTextModel
from .kandinsky5_prompt import clip_ids
from .llm import LLMTextModel

__all__ = ["CROP_START", "MAX_SEQUENCE_LENGTH", "PROMPT_TEMPLATE", "SKIPPED_LAYERS",
           "clip_pooled", "llama_states", "tokenize"]

# diffusers' DEFAULT_PROMPT_TEMPLATE["template"] and its "crop_start"
PROMPT_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\nDescribe the video by detailing the "
    "following aspects: 1. The main content and theme of the video.2. The color, shape, size, "
    "texture, quantity, text, and spatial relationships of the objects.3. Actions, events, "
    "behaviors temporal relationships, physical movement changes of the objects.4. background "
    "environment, light, style and atmosphere.5. camera angles, movements, and transitions "
    "used in the video:<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>")
CROP_START = 95
SKIPPED_LAYERS = 2  # diffusers' num_hidden_layers_to_skip: hidden_states[-(2 + 1)]
MAX_SEQUENCE_LENGTH = 256  # the pipeline's default
_CHAT_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")


def _check(llama: LLMTextModel, prompts: Sequence[str], max_sequence_length: Any) -> None:
    kind = llama.config.get("model_type")
    if kind != "llama":
        raise ValueError(f"HunyuanVideo reads prompts with LLaVA-Llama-3's language model "
                         f"(llama), got a {kind!r} text encoder")
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("the prompts must be a non-empty list of strings")
    if isinstance(max_sequence_length, bool) or not isinstance(max_sequence_length, int) or (
            max_sequence_length < 1):
        raise ValueError(f"max_sequence_length must be a whole number >= 1, got "
                         f"{max_sequence_length!r}")


def tokenize(tokenizer: LLMTokenizer, prompts: Sequence[str],
             max_sequence_length: int = MAX_SEQUENCE_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask), each (B, CROP_START + max_sequence_length) int64: the templated prompts
    padded on the right (the tokenizer's side) and truncated, with a warning where a prompt
    is cut. ValueError for a tokenizer without Llama 3's chat tokens. transformers:
    `tokenizer([template.format(p) for p in prompts], max_length=95 + max_sequence_length,
    padding="max_length", truncation=True)`."""
    inner = tokenizer.tokenizer
    for token in _CHAT_TOKENS:
        if inner.token_to_id(token) is None:
            raise ValueError(f"the tokenizer has no {token} token: HunyuanVideo reads prompts "
                             "with Llama 3's tokenizer (the folder's tokenizer/)")
    length = CROP_START + max_sequence_length
    texts = [PROMPT_TEMPLATE.format(p) for p in prompts]
    longest = max(len(e.ids) for e in inner.encode_batch(texts))
    if longest > length:
        warnings.warn(f"a prompt is {longest - length} tokens past HunyuanVideo's "
                      f"max_sequence_length ({max_sequence_length}); its end is cut off",
                      stacklevel=3)
    return tokenizer(texts, max_length=length)


def llama_states(llama: LLMTextModel, tokenizer: LLMTokenizer, prompts: Sequence[str],
                 max_sequence_length: int = MAX_SEQUENCE_LENGTH
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(states (B, max_sequence_length, hidden) float32, mask (B, max_sequence_length) int64)
    of `prompts` (module docstring). ValueError for a text encoder other than Llama's, a
    tokenizer without Llama 3's chat tokens or a bad max_sequence_length. diffusers:
    `HunyuanVideoPipeline._get_llama_prompt_embeds(prompts, DEFAULT_PROMPT_TEMPLATE,
    max_sequence_length=)`."""
    _check(llama, prompts, max_sequence_length)
    ids, mask = tokenize(tokenizer, prompts, max_sequence_length)
    states = llama.hidden_states(ids, mask, layer=-(SKIPPED_LAYERS + 1)).numpy()
    return (np.ascontiguousarray(states[:, CROP_START:], np.float32),
            np.ascontiguousarray(mask[:, CROP_START:]))


def clip_pooled(clip: CLIPTextModel, tokenizer: CLIPTokenizer, prompts: Sequence[str]
                ) -> np.ndarray:
    """CLIP's pooled output (B, hidden) float32 of each prompt (at most 75 tokens, as
    diffusers truncates to 77 with BOS and EOS). ValueError for a CLIP with a projection.
    diffusers: `HunyuanVideoPipeline._get_clip_prompt_embeds(prompts)`."""
    if clip.has_projection:
        raise ValueError("HunyuanVideo reads CLIP's pooled output without a projection "
                         "(text_encoder_2 is a CLIPTextModel)")
    rows = [clip.forward_pooled(clip_ids(tokenizer, p))[1].numpy() for p in prompts]
    return np.concatenate(rows).astype(np.float32)
