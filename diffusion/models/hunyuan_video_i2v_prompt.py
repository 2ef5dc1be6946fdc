"""HunyuanVideo-I2V's prompt with its picture, as diffusers'
`HunyuanVideoImageToVideoPipeline._get_llama_prompt_embeds` computes it: LLaVA-Llama-3-8B
(transformers' LlavaForConditionalGeneration) reads the pipeline's template, whose <image>
token (position 5) stands for the picture's 576 tokens: CLIP ViT-L/14-336's states one layer
before the last (the class token dropped) through the multi-modal projector (linear_1, GELU,
linear_2). The language model's states two layers before the last (no final norm) give the
text tokens — the template's first 103 tokens and the assistant header's 4 dropped, 252 of
max_sequence_length 256 left with their mask — after every `interleave`-th of the picture's
tokens (4 for token_replace checkpoints, 2 for latent_concat ones; mask 1).

    vision = LlavaVision(llava_config, device=device)
    states, mask = llava_states(llama, vision, tokenizer, picture, ["a cat walks"], 4)
    # states (1, 144 + 252, 4096) float32, mask (1, 396) int64

Every prompt reads the same picture. A prompt past max_sequence_length tokens is cut as
diffusers' tokenizer cuts it, with a warning; its assistant header then gone, its last 4
tokens are dropped (diffusers' fallback).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, nn, take_slice

from ..text.llm_tokenizer import LLMTokenizer
from .clip_vision import CLIPVisionModelWithProjection, clip_pixels
from .hunyuan_video_prompt import MAX_SEQUENCE_LENGTH, SKIPPED_LAYERS
from .layers import Place
from .llm import LLMTextModel

__all__ = ["CROP_START", "I2V_TEMPLATE", "LlavaVision", "llava_states"]

# diffusers' DEFAULT_PROMPT_TEMPLATE of the image-to-video pipeline, and its crop_start
I2V_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\n<image>\nDescribe the video by detailing "
    "the following aspects according to the reference image: 1. The main content and theme "
    "of the video.2. The color, shape, size, texture, quantity, text, and spatial "
    "relationships of the objects.3. Actions, events, behaviors temporal relationships, "
    "physical movement changes of the objects.4. background environment, light, style and "
    "atmosphere.5. camera angles, movements, and transitions used in the video:<|eot_id|>\n\n"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n")
CROP_START = 103
IMAGE_START = 5  # diffusers' image_emb_start: where <image> is in Llama 3's tokens
_HEADER = 4  # <|eot_id|><|start_header_id|>assistant<|end_header_id|>, dropped


class LlavaVision(nn.Module):
    """LLaVA's picture side: `vision_tower` (a CLIPVisionModel) and `multi_modal_projector`
    (linear_1, GELU, linear_2) -> the picture's tokens (1, patches, text hidden size).
    Config: a LlavaConfig (its vision_config, text_config's hidden_size,
    vision_feature_layer, vision_feature_select_strategy). transformers:
    `LlavaForConditionalGeneration.get_image_features(pixel_values)`."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        place: Place = {"dtype": dtype, "device": device}
        layer, strategy = config.get("vision_feature_layer", -2), config.get(
            "vision_feature_select_strategy", "default")
        if not isinstance(layer, int) or strategy not in ("default", "full") or config.get(
                "projector_hidden_act", "gelu") != "gelu":
            raise ValueError(f"LLaVA's vision_feature_layer {layer!r} / select strategy "
                             f"{strategy!r} / projector_hidden_act: one layer, 'default' or "
                             "'full', 'gelu' are supported")
        self.layer, self.drop_class = layer, strategy == "default"
        self.vision_tower = CLIPVisionModelWithProjection(config["vision_config"], projection=False,
                                                          **place)
        width = self.vision_tower.config["hidden_size"]
        text = int((config.get("text_config") or {}).get("hidden_size", 4096))
        bias = bool(config.get("multimodal_projector_bias", True))
        self.multi_modal_projector = nn.Namespace()
        self.multi_modal_projector.linear_1 = nn.Linear(width, text, bias, **place)
        self.multi_modal_projector.linear_2 = nn.Linear(text, text, bias, **place)

    def forward(self, picture: Any) -> Tensor:
        """A picture (PIL or uint8 HxWx3) -> its tokens (1, patches, text hidden size)."""
        tower = self.vision_tower
        states = tower.hidden_states(clip_pixels(picture, tower.image_size,
                                                 device=tower.device), self.layer)
        if self.drop_class:
            states = take_slice(states, 1, states.shape[1], axis=1)
        proj = self.multi_modal_projector
        return proj.linear_2(nn.gelu(proj.linear_1(states)))


def _assistant_starts(tokenizer: LLMTokenizer, ids: np.ndarray) -> np.ndarray:
    """Each row's position after its last <|end_header_id|> (the assistant's "\\n\\n"), the
    row's length where a cut prompt lost the assistant header (diffusers' fallback)."""
    end = tokenizer.tokenizer.token_to_id("<|end_header_id|>")
    starts = []
    for row in ids:
        found = np.flatnonzero(row == end)
        starts.append(found[-1] + 1 if len(found) >= 3 else row.shape[0])
    return np.asarray(starts)


def llava_states(llama: LLMTextModel, vision: LlavaVision, tokenizer: LLMTokenizer,
                 picture: Any, prompts: Sequence[str], interleave: int, *,
                 image_token_index: int, max_sequence_length: int = MAX_SEQUENCE_LENGTH
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(states (B, n / interleave + max_sequence_length - 4, hidden) float32, mask int64) of
    `prompts` with `picture` (module docstring): every `interleave`-th picture token kept
    where 0 < interleave < 6, all of them otherwise (diffusers' rule). ValueError for a
    tokenizer without the <image> token at position 5. diffusers:
    `HunyuanVideoImageToVideoPipeline._get_llama_prompt_embeds(image, prompts,
    DEFAULT_PROMPT_TEMPLATE, max_sequence_length=, image_embed_interleave=)`."""
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("the prompts must be a non-empty list of strings")
    length = CROP_START + max_sequence_length
    texts = [I2V_TEMPLATE.format(p) for p in prompts]
    longest = max(len(e.ids) for e in tokenizer.tokenizer.encode_batch(texts))
    if longest > length:
        warnings.warn(f"a prompt is {longest - length} tokens past HunyuanVideo's "
                      f"max_sequence_length ({max_sequence_length}); its end is cut off",
                      stacklevel=3)
    ids, mask = tokenizer(texts, max_length=length)
    if not (ids[:, IMAGE_START] == image_token_index).all() or (
            (ids == image_token_index).sum(1) != 1).any():
        raise ValueError(f"the tokenizer does not put the template's <image> (id "
                         f"{image_token_index}) at position {IMAGE_START}: give the folder's "
                         "own LLaVA-Llama-3 tokenizer")
    image = vision(picture).numpy().astype(np.float32)[0]  # (n, hidden)
    n, batch = image.shape[0], len(prompts)
    device = llama.embed_tokens.weight.device
    # the ids' embeddings with the picture's n tokens in place of <image> (transformers'
    # masked_scatter of the expanded ids), padded on the right as the ids are
    text = llama.embed_tokens(asarray(ids.astype(np.int32), device=device)).numpy()
    embeds = np.concatenate([text[:, :IMAGE_START].astype(np.float32),
                             np.broadcast_to(image, (batch, *image.shape)),
                             text[:, IMAGE_START + 1:].astype(np.float32)], axis=1)
    full = np.concatenate([mask[:, :IMAGE_START], np.ones((batch, n), mask.dtype),
                           mask[:, IMAGE_START + 1:]], axis=1)
    states = llama.embedded_hidden_states(asarray(np.ascontiguousarray(embeds), device=device),
                                          full, -(SKIPPED_LAYERS + 1)).numpy()
    # the text's positions after <image> moved n - 1 on; the assistant header dropped
    shift = n - 1
    rows, masks = [], []
    keep = slice(None, None, interleave) if 0 < interleave < 6 else slice(None)
    for row, start in enumerate(_assistant_starts(tokenizer, ids)):
        picked = states[row, IMAGE_START:IMAGE_START + n][keep]
        rows.append(np.concatenate([picked, states[row, CROP_START + shift:start - _HEADER + shift],
                                    states[row, start + shift:]]))
        masks.append(np.concatenate([np.ones(len(picked), mask.dtype),
                                     mask[row, CROP_START:start - _HEADER], mask[row, start:]]))
    return (np.ascontiguousarray(np.stack(rows), np.float32),
            np.ascontiguousarray(np.stack(masks)))
