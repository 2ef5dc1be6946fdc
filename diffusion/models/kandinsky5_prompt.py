"""Kandinsky 5's prompt encoding, as diffusers' `Kandinsky5T2IPipeline.encode_prompt(prompt,
max_sequence_length=)` computes it for one prompt (and `Kandinsky5T2VPipeline`'s, `video=True`:
its own template, 128 tokens dropped): Qwen2.5-VL-7B's language model reads the prompt in the
pipeline's template, its last hidden states (through the final norm) with the template's first
40 tokens dropped are the text tokens, and CLIP ViT-L/14's pooled output (`pooler_output`, 77
tokens) is the pooled vector.

    states, pooled = encode(qwen, qwen_tokenizer, clip, clip_tokenizer, "a fox in the snow")
    # states (1, L, 3584) float32; pooled (1, 768) float32

The layout: one sequence, no padding and no mask. diffusers tokenizes with
`padding="longest"`, so a single prompt is never padded: L is the count of the prompt's tokens
plus the closing <|im_end|> (1 for an empty prompt), diffusers' `cu_seqlens` is [0, L], and
the transformer (`Kandinsky5Transformer3DModel`) takes the text at rotary positions
`arange(L)` (the pipeline's `text_rope_pos`) with no attention mask at all. So every Qwen
token that runs is real already. (Several prompts of different lengths in one diffusers
batch are padded to the longest, and the transformer then attends the pads as text: a batched
run differs from the prompts' single ones; encode each prompt on its own, as here.)

CLIP is padded to 77 tokens with the padding masked, but its attention is causal and the
pooled output is the end-of-text token's: no later token, padding included, reaches it, at
positions that do not move. So only BOS .. EOS run (a prompt of 5 words: 7 tokens instead of
77), the pooled output exactly diffusers'.

A prompt past max_sequence_length is cut as diffusers cuts it (the decoded overflow's length
in characters taken off the templated text's end, then the tokens truncated), with a
warning saying how much. The prompt is cleaned first (`clean_prompt`) as diffusers does.

The editing model (`encode_edit`, diffusers' `Kandinsky5I2IPipeline.encode_prompt(prompt,
image)`) reads the prompt in its own template with the picture after it: the picture at half
its size (Pillow's bicubic, as the pipeline resizes it), read by Qwen2.5-VL's vision tower
(its image processor's sizes), its tokens in place of the template's image pads, at
multimodal rotary positions (models.qwen_vl_prompt). The first 54 states are dropped, as the
pipeline drops them, though the template's part before the prompt is fewer tokens with
Qwen's tokenizer (about 49): the prompt's first few tokens go too, as they did in the
model's training. A prompt that takes the whole past max_sequence_length is refused:
diffusers' cut there takes the characters off the template's end, the picture's tokens.
"""

from __future__ import annotations

import html
import re
import warnings
from typing import Any

import numpy as np

from ..imaging import see_through_picture
from ..text.llm_tokenizer import LLMTokenizer
from ..text.tokenizer import CLIPTokenizer
from .clip import CLIPTextModel
from .llm import LLMTextModel
from .qwen_vision import Qwen2_5_VisionTransformer, qwen_vision_pixels
from .qwen_vl_prompt import encode_with_images, expand_image_pads

__all__ = ["CLIP_LENGTH", "EDIT_PREFIX_TOKENS", "EDIT_TEMPLATE", "MAX_SEQUENCE_LENGTH",
           "PREFIX_TOKENS", "PROMPT_TEMPLATE", "VIDEO_PREFIX_TOKENS", "VIDEO_TEMPLATE",
           "clean_prompt", "clip_ids", "encode", "encode_edit", "tokenize"]

PROMPT_TEMPLATE = (
    "<|im_start|>system\nYou are a prompt engineer. Describe the image by detailing the color, "
    "shape, size, texture, quantity, text, spatial relationships of the objects and "
    "background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>")
PREFIX_TOKENS = 40  # diffusers: prompt_template_encode_start_idx, dropped from the states
# Kandinsky5T2VPipeline's template and its prompt_template_encode_start_idx
VIDEO_TEMPLATE = "\n".join([
    "<|im_start|>system\nYou are a prompt engineer. Describe the video in detail.",
    "Describe how the camera moves or shakes, describe the zoom and view angle, whether it "
    "follows the objects.",
    "Describe the location of the video, main characters or objects and their action.",
    "Describe the dynamism of the video and presented actions.",
    "Name the visual style of the video: whether it is a professional footage, user generated "
    "content, some kind of animation, video game or scren content.",
    "Describe the visual effects, postprocessing and transitions if they are presented in the "
    "video.",
    "Pay attention to the order of key actions shown in the scene.<|im_end|>",
    "<|im_start|>user\n{}<|im_end|>"])
VIDEO_PREFIX_TOKENS = 128
EDIT_TEMPLATE = (
    "<|im_start|>system\nYou are a prompt engineer. Based on the provided source image (first "
    "image) and target image (second image), create an interesting text prompt that can be "
    "used together with the source image to create the target image:<|im_end|><|im_start|>"
    "user{}<|vision_start|><|image_pad|><|vision_end|><|im_end|>")
EDIT_PREFIX_TOKENS = 54  # Kandinsky5I2IPipeline's prompt_template_encode_start_idx
IMAGE_PAD = "<|image_pad|>"
MAX_SEQUENCE_LENGTH = 1024  # the pipeline's check_inputs refuses longer
CLIP_LENGTH = 77  # the pipeline's CLIP tokenizer max_length
# the `regex` module's \s (Unicode White_Space), which diffusers' whitespace_clean uses:
# Python's \s also matches U+001C..U+001F
_WHITE_SPACE = re.compile(r"[^\S\x1c-\x1f]+")


def clean_prompt(text: str) -> str:
    """diffusers' `prompt_clean` without ftfy (which diffusers applies only where it is
    installed): HTML entities undone twice, the ends stripped, runs of white space made one
    space, the ends stripped again."""
    return _WHITE_SPACE.sub(" ", html.unescape(html.unescape(text)).strip()).strip()


def _check_length(max_sequence_length: Any) -> None:
    if isinstance(max_sequence_length, bool) or not isinstance(max_sequence_length, int) or (
            not 1 <= max_sequence_length <= MAX_SEQUENCE_LENGTH):
        raise ValueError(f"max_sequence_length must be an integer 1 .. {MAX_SEQUENCE_LENGTH}, "
                         f"got {max_sequence_length!r}")


def tokenize(tokenizer: LLMTokenizer, prompt: str, max_sequence_length: int = 512, *,
             video: bool = False) -> np.ndarray:
    """The templated prompt's ids (1, n) int64, n <= 40 + max_sequence_length (no padding: one
    prompt; `prompt` as `clean_prompt` left it, as `encode` hands it). A prompt past the limit
    is cut as diffusers cuts it, with a warning; ValueError for a tokenizer that is not Qwen's.
    `video`: the video template, 128 in place of 40. diffusers:
    `Kandinsky5T2IPipeline._encode_prompt_qwen`'s two tokenizer calls (the untruncated one to
    find the overflow; `Kandinsky5T2VPipeline`'s)."""
    if not isinstance(prompt, str):
        raise ValueError(f"the prompt must be a string, got {type(prompt).__name__}")
    _check_length(max_sequence_length)
    inner = tokenizer.tokenizer
    for token in ("<|im_start|>", "<|im_end|>"):
        if inner.token_to_id(token) is None:
            raise ValueError(f"the tokenizer has no {token} token: Kandinsky 5 reads prompts "
                             "with Qwen2.5-VL's tokenizer (the folder's tokenizer/)")
    # the picture template's split tells Qwen's tokenizer (the video one's count is taken
    # as diffusers takes it: its pipeline drops 128 tokens whatever the split)
    prefix = len(inner.encode(PROMPT_TEMPLATE.split("{}")[0]).ids)
    if prefix != PREFIX_TOKENS:
        raise ValueError(f"the tokenizer splits Kandinsky 5's template into {prefix} tokens, "
                         f"not {PREFIX_TOKENS}: give Qwen2.5-VL's tokenizer")
    template, drop = (VIDEO_TEMPLATE, VIDEO_PREFIX_TOKENS) if video else (PROMPT_TEMPLATE,
                                                                         PREFIX_TOKENS)
    text = template.format(prompt)
    limit = drop + max_sequence_length
    ids = inner.encode(text).ids
    if len(ids) > limit:
        # diffusers' cut, step by step: the prompt's tokens past max_sequence_length - 2
        # (the last two tokens, the prompt's last and <|im_end|>, left out) decoded, that
        # many characters taken off the text's end, <|im_end|> first
        removed = inner.decode(ids[drop:-2][max_sequence_length - 2:],
                               skip_special_tokens=False)
        if removed:
            text = text[:-len(removed)]
            warnings.warn(f"the prompt is {len(ids) - limit} tokens past Kandinsky 5's "
                          f"max_sequence_length ({max_sequence_length}); its end is cut off",
                          stacklevel=3)
    return np.asarray([inner.encode(text).ids[:limit]], np.int64)


def clip_ids(tokenizer: CLIPTokenizer, prompt: str) -> np.ndarray:
    """CLIP's ids (1, k) int32 of `prompt`: BOS, at most 75 tokens, EOS, without the padding
    to 77 (see the module's docstring). transformers: `tokenizer_2(prompt, max_length=77,
    truncation=True, padding="max_length").input_ids` up to its first EOS."""
    return tokenizer([prompt], max_length=CLIP_LENGTH, padding=False)


def _check_encoders(qwen: LLMTextModel, clip: CLIPTextModel, prompt: Any) -> None:
    """ValueError for a text encoder other than Qwen2.5-VL's language model, a CLIP with a
    projection or a prompt that is not a string."""
    kind = qwen.config.get("model_type")
    if kind != "qwen2_5_vl_text":
        raise ValueError(f"Kandinsky 5 reads prompts with Qwen2.5-VL's language model "
                         f"(qwen2_5_vl_text), got a {kind!r} text encoder")
    if clip.has_projection:
        raise ValueError("Kandinsky 5 reads CLIP's pooled output without a projection "
                         "(text_encoder_2 is a CLIPTextModel): build it with_projection=False")
    if not isinstance(prompt, str):
        raise ValueError(f"the prompt must be a string, got {type(prompt).__name__}")


def _pooled(clip: CLIPTextModel, clip_tokenizer: CLIPTokenizer, prompt: str) -> np.ndarray:
    _, pooled = clip.forward_pooled(clip_ids(clip_tokenizer, prompt))
    return pooled.numpy().astype(np.float32)  # type: ignore[no-any-return]


def encode(qwen: LLMTextModel, qwen_tokenizer: LLMTokenizer, clip: CLIPTextModel,
           clip_tokenizer: CLIPTokenizer, prompt: str, *, max_sequence_length: int = 512,
           video: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Kandinsky 5's text conditioning of `prompt`: Qwen's states (1, L, hidden) float32 (L
    the prompt's tokens and <|im_end|>, at most max_sequence_length; the transformer's text
    rotary positions are arange(L), diffusers' cu_seqlens [0, L]) and CLIP's pooled output
    (1, hidden_2) float32. ValueError for a text encoder other than Qwen2.5-VL's language model
    or a CLIP with a projection. diffusers: `Kandinsky5T2IPipeline.encode_prompt(prompt,
    max_sequence_length=)`'s first two outputs (one image); `video`: Kandinsky5T2VPipeline's
    (its template, 128 tokens dropped)."""
    _check_encoders(qwen, clip, prompt)
    prompt = clean_prompt(prompt)
    ids = tokenize(qwen_tokenizer, prompt, max_sequence_length, video=video)
    drop = VIDEO_PREFIX_TOKENS if video else PREFIX_TOKENS
    states = qwen.hidden_states(ids, None, layer=-1).numpy()[:, drop:]
    if not states.shape[1]:  # the template split into fewer tokens than diffusers drops
        raise ValueError("the prompt left no tokens past Kandinsky 5's template: give "
                         "Qwen2.5-VL's tokenizer (the folder's tokenizer/)")
    return states.astype(np.float32), _pooled(clip, clip_tokenizer, prompt)


def encode_edit(qwen: LLMTextModel, vision: Qwen2_5_VisionTransformer,
                qwen_tokenizer: LLMTokenizer, clip: CLIPTextModel, clip_tokenizer: CLIPTokenizer,
                prompt: str, picture: Any, *, pixel_limits: tuple[int, int],
                max_sequence_length: int = MAX_SEQUENCE_LENGTH
                ) -> tuple[np.ndarray, np.ndarray]:
    """The editing model's conditioning of `prompt` with `picture` (PIL, or uint8 HxWx3 /
    HxWx4; the picture to edit at its own size): Qwen's states (1, L, hidden) float32, the
    first EDIT_PREFIX_TOKENS dropped (L: the rest of the prompt, the picture's tokens and the
    template's end), and CLIP's pooled output of the prompt alone (1, hidden_2) float32.
    `pixel_limits`: the image processor's (min_pixels, max_pixels). ValueError as `encode`,
    and for a prompt and picture past max_sequence_length tokens. diffusers:
    `Kandinsky5I2IPipeline.encode_prompt(prompt, image, max_sequence_length=)`'s first two
    outputs."""
    from PIL import Image

    _check_encoders(qwen, clip, prompt)
    _check_length(max_sequence_length)
    pad = qwen_tokenizer.tokenizer.token_to_id(IMAGE_PAD)
    if pad is None:
        raise ValueError(f"the tokenizer has no {IMAGE_PAD} token: Kandinsky 5's editing model "
                         "reads prompts with Qwen2.5-VL's tokenizer (the folder's tokenizer/)")
    prompt = clean_prompt(prompt)
    picture = see_through_picture(picture, "the picture to edit")
    width, height = picture.size
    if min(width, height) < 2:
        raise ValueError(f"the picture to edit is {width}x{height}: give one of at least 2x2 "
                         "pixels")
    # the pipeline's own halving (Pillow's default filter, bicubic), before the processor's
    # resize to whole merge blocks
    half = picture.resize((width // 2, height // 2), Image.Resampling.BICUBIC)
    config = vision.config
    low, high = pixel_limits
    pixels, grids = qwen_vision_pixels(half, patch_size=config["patch_size"],
                                       merge_size=config["spatial_merge_size"],
                                       temporal_patch_size=config["temporal_patch_size"],
                                       min_pixels=low, max_pixels=high, device=vision.device)
    text = expand_image_pads(EDIT_TEMPLATE.format(prompt), grids,
                             merge=config["spatial_merge_size"])
    ids = qwen_tokenizer.tokenizer.encode(text).ids
    if len(ids) > EDIT_PREFIX_TOKENS + max_sequence_length:
        raise ValueError(f"the prompt and the picture to edit take {len(ids) - EDIT_PREFIX_TOKENS}"
                         f" tokens, past max_sequence_length {max_sequence_length}: shorten the "
                         "prompt")
    states = encode_with_images(qwen, vision, ids, image_token_id=int(pad),
                                pixel_values=pixels, grid_thw=grids)
    return (states.numpy()[:, EDIT_PREFIX_TOKENS:].astype(np.float32),
            _pooled(clip, clip_tokenizer, prompt))
