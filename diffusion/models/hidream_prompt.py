"""HiDream-I1's prompt encoding, as diffusers' `HiDreamImagePipeline.encode_prompt` computes
it for one set of prompts: four text encoders, each reading the prompt (or its own
`prompt_2`/`prompt_3`/`prompt_4`) at `max_sequence_length` tokens (128):

- CLIP-L and CLIP-G (Long-CLIP, `CLIPTextModelWithProjection`): their projected pooled
  outputs (`text_embeds`, at each row's end-of-text token) side by side, the transformer's
  `pooled_embeds` (B, proj_l + proj_g);
- T5-XXL: its last hidden states of the prompt padded to 128 tokens, the padding masked as
  keys (diffusers passes the tokenizer's attention mask), `encoder_hidden_states_t5`;
- Llama-3.1-8B-Instruct: the output of every decoder layer (transformers'
  `hidden_states[1:]`, the last one after the final norm) of the prompt padded on the right
  to 128 tokens with its end token (the pipeline's `pad_token = eos_token`), stacked as
  `encoder_hidden_states_llama3` (layers, B, 128, hidden).

    pooled = clip_pooled([(clip_l, tok_l), (clip_g, tok_g)], ["a cat"])  # (1, 2048)
    t5 = t5_states(t5_model, t5_tokenizer, ["a cat"])                   # (1, 128, 4096)
    llama = llama_states(llama_model, llama_tokenizer, ["a cat"])       # (32, 1, 128, 4096)

CLIP runs BOS .. EOS only (without the padding to 128): its attention is causal, so the
end-of-text token's state, the pooled output, is the one the padded run gives. A prompt past
an encoder's length is cut as diffusers' tokenizers cut it, with a warning naming the encoder.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ..text.llm_tokenizer import LLMTokenizer
from ..text.t5_tokenizer import T5Tokenizer
from ..text.tokenizer import CLIPTokenizer
from .clip import CLIPTextModel
from .llm import LLMTextModel
from .t5 import T5EncoderModel

__all__ = ["CLIP_LIMIT", "MAX_SEQUENCE_LENGTH", "clip_pooled", "llama_states", "t5_states"]

MAX_SEQUENCE_LENGTH = 128  # the pipeline's default, every encoder's length
CLIP_LIMIT = 218  # diffusers' cap on the CLIP length (`min(max_sequence_length, 218)`)


def _check(prompts: Sequence[str], max_sequence_length: object) -> None:
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("the prompts must be a non-empty list of strings")
    if isinstance(max_sequence_length, bool) or not isinstance(max_sequence_length, int) or (
            max_sequence_length < 2):
        raise ValueError(f"max_sequence_length must be a whole number >= 2, got "
                         f"{max_sequence_length!r}")


def _warn_cut(encoder: str, lengths: Sequence[int], limit: int) -> None:
    """A warning where a prompt's `lengths` (its tokens with the special ones) pass `limit`."""
    longest = max(lengths, default=0)
    if longest > limit:
        warnings.warn(f"a prompt is {longest - limit} tokens past HiDream's {limit} for "
                      f"{encoder}; its end is cut off", stacklevel=3)


def clip_pooled(clips: Sequence[tuple[CLIPTextModel, CLIPTokenizer]], prompts: Sequence[str],
                max_sequence_length: int = MAX_SEQUENCE_LENGTH) -> np.ndarray:
    """(B, sum of projection_dim) float32: each CLIP's projected pooled output of `prompts`
    (BOS, at most min(max_sequence_length, 218) - 2 tokens, EOS), concatenated in order.
    ValueError for a CLIP without a projection. diffusers: `torch.cat([_get_clip_prompt_
    embeds(tokenizer, text_encoder, ...), _get_clip_prompt_embeds(tokenizer_2,
    text_encoder_2, ...)], -1)`."""
    _check(prompts, max_sequence_length)
    pooled = []
    for clip, tokenizer in clips:
        if not clip.has_projection:
            raise ValueError("HiDream reads CLIP's projected pooled output "
                             "(CLIPTextModelWithProjection): this CLIP has no text_projection")
        limit = min(max_sequence_length, CLIP_LIMIT)
        _warn_cut("CLIP", [len(t) + 2 for t in tokenizer.tokenize(list(prompts))], limit)
        ids = tokenizer(list(prompts), max_length=limit, padding=False)
        pooled.append(clip.forward_pooled(ids)[1].numpy().astype(np.float32))
    return np.concatenate(pooled, axis=-1)


def t5_states(t5: T5EncoderModel, tokenizer: T5Tokenizer, prompts: Sequence[str],
              max_sequence_length: int = MAX_SEQUENCE_LENGTH) -> np.ndarray:
    """(B, max_sequence_length, d_model) float32: T5's last hidden states of `prompts` padded
    (and cut) to max_sequence_length tokens, the padding masked. diffusers:
    `HiDreamImagePipeline._get_t5_prompt_embeds`."""
    _check(prompts, max_sequence_length)
    _warn_cut("T5", [len(t) + 1 for t in tokenizer.tokenize(list(prompts))],
              max_sequence_length)
    ids, mask = tokenizer.encode(list(prompts), max_sequence_length)
    return np.asarray(t5(ids, mask).numpy(), np.float32)


def llama_states(llama: LLMTextModel, tokenizer: LLMTokenizer, prompts: Sequence[str],
                 max_sequence_length: int = MAX_SEQUENCE_LENGTH) -> np.ndarray:
    """(num_hidden_layers, B, max_sequence_length, hidden) float32: the output of every Llama
    layer (the last one final-normed) of `prompts` padded on the right to
    max_sequence_length tokens. ValueError for a text encoder other than Llama's or a
    left-padding tokenizer. diffusers: `HiDreamImagePipeline._get_llama3_prompt_embeds`
    (`torch.stack(outputs.hidden_states[1:])`)."""
    _check(prompts, max_sequence_length)
    kind = llama.config.get("model_type")
    if kind != "llama":
        raise ValueError(f"HiDream reads prompts with Llama 3.1 (model_type llama), got a "
                         f"{kind!r} text encoder")
    if tokenizer.padding_side != "right":
        raise ValueError("HiDream's Llama tokenizer pads on the right; this one pads on the "
                         f"{tokenizer.padding_side}")
    _warn_cut("Llama", [len(e.ids) for e in tokenizer.tokenizer.encode_batch(list(prompts))],
              max_sequence_length)
    ids, mask = tokenizer(list(prompts), max_sequence_length)
    layers = range(1, len(llama.layers) + 1)
    states = llama.hidden_states_of(ids, mask, tuple(layers))
    return np.stack([s.numpy().astype(np.float32) for s in states])
