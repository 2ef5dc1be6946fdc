"""Qwen-Image 2.1's prompt embedding, as diffusers' `QwenImage21Pipeline.encode_prompt(prompt,
image=)` computes it: each prompt in its template (a fixed system message, the prompt as the
user's turn, the assistant's turn opened), Qwen3-VL's last decoder layer's output before its
final RMSNorm, each prompt's own tokens after the system message's kept, zero-padded on the
right to the longest.

    embeds, mask, image_pad_mask = encode_t2i(text_encoder, tokenizer, ["a red circle"])
    embeds, mask, image_pad_mask = encode_ti2i(text_encoder, vision, tokenizer,
                                               ["make it night"], [picture])
    read = read_pictures(vision, [picture])  # the tower once, for several prompt lists
    embeds, mask, image_pad_mask = encode_read(text_encoder, tokenizer, ["blurry"], read)
    img_mask = joint_img_mask(image_pad_mask, latent_tokens=(height // 16) * (width // 16))

Prompts of text alone (`encode_t2i`) are read as a left-padded batch. With condition pictures
(`encode_ti2i`) the user's turn opens with one `<imageN><|vision_start|><|image_pad|>
<|vision_end|>` per picture (space-separated), each pad repeated once per token of its
picture; Qwen3-VL's vision tower (qwen3_vision.py) reads the pictures once, its tokens take
the pads' places in the input embeddings, the sequence runs at Qwen3-VL's multimodal rotary
positions (the interleaved axes: a picture's tokens at (start, start + row, start + column)
of its merged grid), and its deepstack features are added to the first decoder layers'
outputs at the pads. Each prompt runs alone and unpadded: the batch's left padding changes
nothing its own tokens see.

What the transformer then reads: `encoder_hidden_states` = embeds (B, L, hidden) float32,
`encoder_hidden_states_mask` = mask (B, L) int64 (1 a prompt token, 0 padding; None when no
prompt is padded) and `img_mask` = joint_img_mask's (B, L + latent_tokens / 4) bool (True at
the condition pictures' pads and at the target picture's slots, one per 2x2 latent tokens).
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from gpustd import asarray
from gpustd.gather import scatter

from ..text.llm_tokenizer import LLMTokenizer
from .llm import LLMTextModel
from .qwen3_vision import Qwen3VLVisionModel, VisionFeatures, pixel_options, qwen3_vision_pixels
from .qwen_vl_prompt import expand_image_pads, multimodal_positions
from .transformer_ops import cast

__all__ = ["SYSTEM_MESSAGE", "T2I_TEMPLATE", "ReadPictures", "encode_read", "encode_t2i",
           "encode_ti2i", "joint_img_mask", "read_ids", "read_pictures", "ti2i_template",
           "tokenize_t2i", "tokenize_ti2i"]

SYSTEM_PROMPT = "Comprehend and analyze the provided prompt."
# Qwen3-VL's chat template renders a system message so; its tokens are dropped from the states
SYSTEM_MESSAGE = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
T2I_TEMPLATE = SYSTEM_MESSAGE + "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
IMAGE_PAD = "<|image_pad|>"
_SLOT = "<image{}><|vision_start|><|image_pad|><|vision_end|>"


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


def ti2i_template(count: int) -> str:
    """The image-to-image template with `count` picture slots, `{}` the prompt's place.
    diffusers: QwenImage21Pipeline's `prompt_template_ti2i` with its slots repeated."""
    slots = " ".join(_SLOT.format(i) for i in range(1, count + 1))
    return SYSTEM_MESSAGE + f"<|im_start|>user\n{slots}{{}}<|im_end|>\n<|im_start|>assistant\n"


def tokenize_ti2i(tokenizer: LLMTokenizer, prompts: Sequence[str], grids: Any, *,
                  merge: int = 2, max_length: int = 4096) -> tuple[list[np.ndarray], int]:
    """Each prompt's ids (L_i,) int64 in the image-to-image template for the pictures of
    `grids` (pictures, 3), each pad repeated once per token of its picture, and the system
    message's token count. ValueError for a prompt past `max_length` tokens or holding a pad.
    transformers: `Qwen3VLProcessor(text=, images=)`'s ids, unpadded."""
    if isinstance(prompts, str) or not prompts:
        raise ValueError("prompts must be a non-empty list of strings")
    grids = np.asarray(grids, np.int64).reshape(-1, 3)
    for token in ("<|im_start|>", "<|vision_start|>", IMAGE_PAD):
        if tokenizer.tokenizer.token_to_id(token) is None:
            raise ValueError(f"the tokenizer has no {token} token: Qwen-Image 2.1 reads "
                             "prompts with pictures with Qwen3-VL's tokenizer")
    system, _ = tokenizer([SYSTEM_MESSAGE], max_length, padding="longest")
    template = ti2i_template(len(grids))
    rows = []
    for i, prompt in enumerate(prompts):
        if IMAGE_PAD in prompt:
            raise ValueError(f"prompt {i} holds {IMAGE_PAD}; the pictures' slots are the "
                             "template's own: remove it from the prompt")
        text = expand_image_pads(template.format(prompt or " "), grids, merge=merge)
        ids, _ = tokenizer([text], max_length + 1, padding="longest")
        if ids.shape[1] > max_length:
            raise ValueError(f"a prompt is more than {max_length} tokens with its template "
                             "and pictures; shorten it or give smaller pictures")
        if not np.array_equal(ids[0, : system.shape[1]], system[0]):
            raise ValueError("the tokenizer splits the template's system message differently "
                             "inside the prompt: give Qwen3-VL's tokenizer")
        rows.append(ids[0])
    return rows, system.shape[1]


def read_ids(text_encoder: LLMTextModel, ids: np.ndarray, pad: int, grids: np.ndarray,
             merge: int, features: VisionFeatures) -> np.ndarray:
    """One prompt's last decoder layer's output (L, hidden) float32, before the final norm:
    the picture's tokens written over its pads' embeddings, its deepstack features' rows
    added at the pads alone. transformers: `Qwen3VLModel(ids[None], pixel_values=,
    image_grid_thw=, mm_token_type_ids=)` with the language model's final norm skipped."""
    at = np.flatnonzero(ids == pad)
    if len(at) != features.tokens.shape[0]:
        raise ValueError(f"{features.tokens.shape[0]} picture tokens for {len(at)} image pads")
    device = text_encoder.embed_tokens.weight.device
    # the lookup's output is its own: the pads' rows are overwritten in place, one dispatch
    inputs = cast(text_encoder.embed_tokens(asarray(ids.astype(np.int32)[None], device=device)),
                  np.float32)
    scatter(inputs, asarray(at.astype(np.int32), device=device),
            cast(features.tokens, np.float32)[None], 1)
    states = text_encoder.multimodal_hidden_states(
        inputs, multimodal_positions(ids, pad, grids, merge=merge), final_norm=False,
        added=list(features.deepstack), at=at)
    return states.numpy()[0].astype(np.float32)


class ReadPictures(NamedTuple):
    """Condition pictures as the vision tower read them (`read_pictures`), for any number of
    prompts: their patch grids (pictures, 3) of (t, h, w), the tower's merge size and its
    VisionFeatures. A picture's features do not depend on the prompt beside it, so the
    positive and the negative prompts read the same ones."""

    grids: np.ndarray
    merge: int
    features: VisionFeatures


def read_pictures(vision: Qwen3VLVisionModel, pictures: Sequence[Any], *,
                  processor_config: dict[str, Any] | None = None) -> ReadPictures:
    """`pictures` (PIL images or uint8 HxWx3 / HxWx4 arrays, as the pipeline resized them;
    transparency composited over white, as `condition_picture` and the image processor do)
    read by the vision tower once; `processor_config`: the folder's
    processor/preprocessor_config.json (None: Qwen3-VL's). transformers:
    `Qwen3VLModel.get_image_features(pixel_values, image_grid_thw)`."""
    if isinstance(pictures, (str, bytes)) or not len(pictures):
        raise ValueError("encode_ti2i needs a non-empty list of condition pictures; prompts "
                         "of text alone go through encode_t2i")
    options = pixel_options(processor_config)
    config = vision.config
    if (options["patch_size"], options["merge_size"]) != (config["patch_size"],
                                                          config["spatial_merge_size"]):
        raise ValueError(f"the processor's patch {options['patch_size']} / merge "
                         f"{options['merge_size']} differ from the vision tower's "
                         f"{config['patch_size']} / {config['spatial_merge_size']}: give the "
                         "folder's own processor/")
    read = [qwen3_vision_pixels(p, options, device=vision.device) for p in pictures]
    grids = np.concatenate([grid for _, grid in read])
    features = vision(np.concatenate([pixels for pixels, _ in read]), grids)
    return ReadPictures(grids, config["spatial_merge_size"], features)


def encode_ti2i(text_encoder: LLMTextModel, vision: Qwen3VLVisionModel,
                tokenizer: LLMTokenizer, prompts: Sequence[str], pictures: Sequence[Any], *,
                processor_config: dict[str, Any] | None = None, max_length: int = 4096
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """`encode_read` of `pictures` as `read_pictures` reads them. diffusers:
    `QwenImage21Pipeline.encode_prompt(prompt, image=pictures)`."""
    read = read_pictures(vision, pictures, processor_config=processor_config)
    return encode_read(text_encoder, tokenizer, prompts, read, max_length=max_length)


def encode_read(text_encoder: LLMTextModel, tokenizer: LLMTokenizer, prompts: Sequence[str],
                read: ReadPictures, *, max_length: int = 4096
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Prompt embeddings (B, L, hidden) float32, their mask (B, L) int64 (None when no
    prompt is padded) and the image-pad mask (B, L) bool (True at the pictures' pads) of
    `prompts`, each read with every picture of `read` (read_pictures's). diffusers:
    `QwenImage21Pipeline.encode_prompt(prompt, image=)` past its vision tower."""
    grids, merge, features = read
    rows, drop = tokenize_ti2i(tokenizer, prompts, grids, merge=merge, max_length=max_length)
    pad = typing.cast(int, tokenizer.tokenizer.token_to_id(IMAGE_PAD))  # checked there
    states = [read_ids(text_encoder, ids, pad, grids, merge, features)[drop:] for ids in rows]
    length = max(len(s) for s in states)
    embeds = np.zeros((len(rows), length, states[0].shape[-1]), np.float32)
    keep = np.zeros((len(rows), length), np.int64)
    image_pad_mask = np.zeros((len(rows), length), bool)
    for i, (ids, row) in enumerate(zip(rows, states, strict=True)):
        embeds[i, : len(row)], keep[i, : len(row)] = row, 1
        image_pad_mask[i, : len(row)] = ids[drop:] == pad
    return embeds, None if keep.all() else keep, image_pad_mask
