"""Bria FIBO 2's prompt encoding, as diffusers' BriaFibo2Pipeline does it for a generation: a
JSON caption is cleaned as training cleaned captions (empty values and the aesthetic and
preference scores dropped) and serialized compactly; the prompt, in a one-turn chat template,
is read by Qwen3-VL's language model, whose hidden states at 18 layers are each scaled to unit
RMS per token, then side by side in threes: six bundles, the transformer's Perceiver's first.

    bundles = encode(text_model, tokenizer, generation_prompt('{"short_description": "a fox"}'))

An edit (`encode_edit`) reads the pictures to edit too: the prompt becomes one JSON object, a
vision marker per picture, the caption of the result where the prompt has one, then the edit
instruction; Qwen3-VL's vision tower reads the pictures into the markers' places
(models.qwen21_prompt's reading, its deepstack features and multimodal positions).

A caption whose `text_render` entries hold text is read with images of that text
(models.bria_fibo2_text), each entry marked by its image's vision marker, after any pictures
to edit (`encode_pictures`).
"""

from __future__ import annotations

import json
import math
import typing
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpustd import asarray
from gpustd.gather import scatter

from ..text.llm_tokenizer import LLMTokenizer
from .bria_fibo2_text import mark_text_images
from .llm import LLMTextModel
from .qwen3_vision import Qwen3VLVisionModel
from .qwen21_prompt import read_pictures
from .qwen_vl_prompt import expand_image_pads, multimodal_positions
from .transformer_ops import cast

__all__ = ["DEFAULT_NEGATIVE_PROMPT", "LAYERS", "MAX_SEQUENCE_LENGTH", "VISION_MARKER",
           "edit_prompt", "encode", "encode_pictures", "generation_prompt", "parse_prompt"]

# the null caption FIBO 2 was trained with for classifier-free guidance
DEFAULT_NEGATIVE_PROMPT = (
    '{"short_description":"","objects":[],"background_setting":"","lighting":{},'
    '"aesthetics":{},"photographic_characteristics":{},"style_medium":"",'
    '"context":"","artistic_style":""}')
TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
# Qwen3-VL layers behind the transformer's six text bundles: the Perceiver's, then one per
# injection block (diffusers' TEXT_ENCODER_OUT_LAYERS)
LAYERS = ((9, 20, 31), (5, 16, 27), (7, 18, 29), (9, 20, 31), (11, 22, 33), (13, 24, 35))
MAX_SEQUENCE_LENGTH = 4096  # the pipeline's tokenizer_max_length
VISION_MARKER = "<|vision_start|><|image_pad|><|vision_end|>"


def _empty(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    return value is None or (isinstance(value, (str, dict, list)) and not value)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        value = {k: _clean(v) for k, v in value.items()}
        return {k: v for k, v in value.items() if not _empty(v)}
    if isinstance(value, list):
        return [v for v in map(_clean, value) if not _empty(v)]
    return value


def parse_prompt(prompt: str) -> tuple[dict[str, Any] | str | None, str | None]:
    """A prompt's caption, cleaned as FIBO 2's training cleaned captions, and its edit
    instruction; a prompt that is not a JSON object comes back as it is. diffusers:
    `BriaFibo2Pipeline._parse_prompt`."""
    try:
        caption = json.loads(prompt)
    except json.JSONDecodeError:
        return prompt, None
    if not isinstance(caption, dict):
        return prompt, None
    instruction = caption.pop("edit_instruction", None)
    if "structured_caption" in caption:
        caption = caption.pop("structured_caption")
        if not isinstance(caption, dict):
            return caption or None, instruction
    keys = set(caption)
    scores = ("aesthetic_score", "preference_score")
    caption = {key: {k: v for k, v in value.items() if k not in scores}
               if isinstance(value, dict) else value
               for key, value in _clean(caption).items() if key not in scores}
    caption = {key: value for key, value in caption.items() if value != {}}
    # exactly a short description and a text_render list: that order, the list kept even
    # empty (it then says the picture has no text)
    if keys == {"short_description", "text_render"}:
        caption = {"short_description": caption.get("short_description") or "",
                   "text_render": caption.get("text_render") or []}
    return caption or None, instruction


def generation_prompt(prompt: str) -> str:
    """What a generation encodes for `prompt`: a JSON caption cleaned and serialized
    compactly, anything else as it is. diffusers: `BriaFibo2Pipeline.__call__`'s prompts."""
    caption, _ = parse_prompt(prompt)
    if isinstance(caption, str):
        return prompt
    return json.dumps(caption or {}, separators=(",", ":"), ensure_ascii=False)


def edit_prompt(prompt: str, count: int, text_images: bool = False) -> str:
    """What an edit of `count` pictures encodes for `prompt` (an instruction, or a JSON
    object with an "edit_instruction" and the result's caption): one compact JSON object, a
    vision marker per picture, the cleaned caption (with `text_images`, its text entries
    marked too), the instruction. ValueError for a JSON object without an instruction.
    diffusers: `BriaFibo2Pipeline._get_edit_prompt(prompt, count, text_images)`."""
    try:
        edit = json.loads(prompt)
    except json.JSONDecodeError:
        edit = None
    if isinstance(edit, dict) and "edit_instruction" not in edit:
        raise ValueError('to edit a picture, the prompt has to be the edit instruction, or a '
                         'JSON caption of the result with an "edit_instruction" key')
    caption, instruction = parse_prompt(prompt)
    if instruction is None:  # the prompt is the instruction alone
        caption, instruction = None, prompt
    if text_images and isinstance(caption, dict):
        mark_text_images(caption, VISION_MARKER)
    out: dict[str, Any] = ({"image": VISION_MARKER} if count == 1 else
                           {f"image_{k}": VISION_MARKER for k in range(1, count + 1)})
    if caption:
        out["structured_caption"] = caption
    out["edit_instruction"] = instruction
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False)


def _check(text_model: LLMTextModel) -> list[int]:
    """LAYERS' hidden states in order, checked to be within a Qwen3-VL language model."""
    kind = text_model.config.get("model_type")
    if kind != "qwen3_vl_text":
        raise ValueError(f"Bria FIBO 2 reads prompts with Qwen3-VL's language model "
                         f"(qwen3_vl_text), got a {kind!r} text encoder")
    depth = len(text_model.layers)
    wanted = sorted({k for layers in LAYERS for k in layers})
    if wanted[-1] > depth:
        raise ValueError(f"FIBO 2 reads Qwen3-VL's layer {wanted[-1]}, past this "
                         f"{depth}-layer text encoder: give the folder's own")
    return wanted


def _bundles(wanted: Sequence[int], states: Sequence[Any]) -> list[np.ndarray]:
    """Each state scaled to unit RMS per token (eps 1e-6, float32), three side by side."""
    normed = {}
    for k, state in zip(wanted, states, strict=True):
        x = state.numpy().astype(np.float32)
        rms = np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True) + np.float32(1e-6))
        normed[k] = x * (np.float32(1) / rms)
    return [np.concatenate([normed[k] for k in layers], axis=-1) for layers in LAYERS]


def encode(text_model: LLMTextModel, tokenizer: LLMTokenizer, prompt: str
           ) -> list[np.ndarray]:
    """The six bundles (1, L, 3 * hidden) float32 of `prompt`, encoded as given (a generation
    passes `generation_prompt`'s): each of LAYERS' hidden states scaled to unit RMS per token,
    three side by side. diffusers: `BriaFibo2Pipeline.encode_prompt` (one prompt, no images),
    unbundled along its second axis."""
    wanted = _check(text_model)
    ids, _ = tokenizer([TEMPLATE.format(prompt)], MAX_SEQUENCE_LENGTH, padding="longest")
    return _bundles(wanted, text_model.hidden_states_of(ids, None, wanted))


def encode_pictures(text_model: LLMTextModel, vision: Qwen3VLVisionModel,
                    tokenizer: LLMTokenizer, prompt: str, pictures: Sequence[Any], *,
                    processor_config: dict[str, Any] | None = None) -> list[np.ndarray]:
    """`encode`'s bundles of `prompt` holding a VISION_MARKER per picture of `pictures` (PIL
    images: an edit's crops as Qwen3-VL reads them, then the caption's text images): the
    vision tower's tokens in the image pads' places, its deepstack features added to the
    first layers' outputs there, at Qwen3-VL's multimodal positions. diffusers:
    `BriaFibo2Pipeline.encode_prompt(prompt, image=, text_images=)`."""
    wanted = _check(text_model)
    grids, merge, features = read_pictures(vision, pictures, processor_config=processor_config)
    text = expand_image_pads(TEMPLATE.format(prompt), grids, merge=merge)
    ids = tokenizer([text], MAX_SEQUENCE_LENGTH, padding="longest")[0][0]
    pad = typing.cast(int, tokenizer.tokenizer.token_to_id("<|image_pad|>"))
    at = np.flatnonzero(ids == pad)
    if len(at) != features.tokens.shape[0]:
        raise ValueError(f"the edit prompt holds {len(at)} picture tokens of the "
                         f"{features.tokens.shape[0]} its pictures need: shorten the prompt")
    device = text_model.embed_tokens.weight.device
    inputs = cast(text_model.embed_tokens(asarray(ids.astype(np.int32)[None], device=device)),
                  np.float32)
    scatter(inputs, asarray(at.astype(np.int32), device=device),
            cast(features.tokens, np.float32)[None], 1)
    states = text_model.multimodal_hidden_states_of(
        inputs, multimodal_positions(ids, pad, grids, merge=merge), wanted,
        added=list(features.deepstack), at=at)
    return _bundles(wanted, states)
