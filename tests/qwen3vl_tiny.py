"""Tiny random Qwen3-VL parts built in-process (transformers, tokenizers), Qwen-Image 2.1's text
encoder: the language model's config (Qwen3's sizes, heads 16 wide so the interleaved
multimodal RoPE's three axes and its time-only tail each hold frequencies), the whole
Qwen3VLForConditionalGeneration with a one-block vision tower (or a deeper one), and a
Qwen3VLProcessor over a tiny Qwen tokenizer with the vision tokens (and, to read pictures,
transformers' Pillow image processor of Qwen2-VL with Qwen3-VL's settings)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from sd_tiny import randomized
from zimage_tiny import QWEN3_TINY, tiny_qwen_tokenizer_with

# head_dim 16: 8 frequencies, rows at 1 and 4, columns at 2 and 5, time at 0, 3, 6 and 7 (as
# the real [24, 20, 20] of 64 leaves 60..63 to time)
QWEN3VL_TEXT: dict[str, Any] = {
    **{k: v for k, v in QWEN3_TINY.items() if k != "tie_word_embeddings"}, "head_dim": 16,
    "rope_parameters": {"rope_type": "default", "rope_theta": 5e6, "mrope_section": [4, 2, 2],
                        "mrope_interleaved": True}}
# three blocks, the first two's features added to the first two decoder layers; a 4x4 learned
# position grid, resampled to every picture's larger grid
QWEN3VL_VISION: dict[str, Any] = dict(
    depth=3, hidden_size=16, intermediate_size=24, num_heads=2,
    out_hidden_size=QWEN3_TINY["hidden_size"], deepstack_visual_indexes=[0, 1],
    num_position_embeddings=16)
# Qwen3-VL's preprocessor_config.json with pixel limits small enough for tiny pictures
QWEN3VL_PIXELS: dict[str, Any] = {
    "patch_size": 16, "merge_size": 2, "temporal_patch_size": 2, "image_mean": [0.5] * 3,
    "image_std": [0.5] * 3, "size": {"shortest_edge": 64 * 64, "longest_edge": 96 * 160}}
VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
# the real chat template's branch a system message of text parts takes (no tools): what
# QwenImage21Pipeline renders to count the tokens it drops
SYSTEM_TEMPLATE = ("{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\\n' }}"
                   "{%- for content in messages[0].content %}{{- content.text }}{%- endfor %}"
                   "{{- '<|im_end|>\\n' }}{%- endif %}")


@functools.cache
def tiny_qwen3vl_text(seed: int = 3) -> Any:
    """transformers' Qwen3VLTextModel of QWEN3VL_TEXT, random weights (made once)."""
    import transformers

    config = transformers.Qwen3VLTextConfig(**QWEN3VL_TEXT)
    return randomized(transformers.Qwen3VLTextModel(config), seed).eval()


def tiny_qwen3vl_tokenizer(folder: Path) -> Path:
    """tiny_qwen_tokenizer's with the vision tokens after its own, in `folder`."""
    return tiny_qwen_tokenizer_with(folder, VISION_TOKENS, special=True)


def tiny_qwen3vl(image_token_id: int, seed: int = 3, vision: dict[str, Any] | None = None
                 ) -> Any:
    """transformers' Qwen3VLForConditionalGeneration: QWEN3VL_TEXT's language model and a
    one-block vision tower no prompt of text alone uses (`vision`: another vision config,
    QWEN3VL_VISION to read pictures)."""
    import transformers

    vision = vision or dict(depth=1, hidden_size=16, intermediate_size=24, num_heads=2,
                            out_hidden_size=QWEN3_TINY["hidden_size"],
                            deepstack_visual_indexes=[0], num_position_embeddings=16)
    config = transformers.Qwen3VLConfig(text_config=QWEN3VL_TEXT, vision_config=vision,
                                        image_token_id=image_token_id)
    return randomized(transformers.Qwen3VLForConditionalGeneration(config), seed).eval()


def tiny_qwen3vl_processor(folder: Path, pixels: dict[str, Any] | None = None) -> Any:
    """transformers' Qwen3VLProcessor of the tokenizer in `folder` (tiny_qwen3vl_tokenizer's),
    without a video processor (it needs torchvision, which the references do without) and
    without an image processor unless `pixels` (a preprocessor_config.json, QWEN3VL_PIXELS)
    asks for one: Qwen2VLImageProcessorPil, the torchvision-free backend of Qwen3-VL's."""
    import transformers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    class Processor(transformers.Qwen3VLProcessor):  # type: ignore[misc]
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), pad_token="<|endoftext|>",
        eos_token="<|im_end|>", model_max_length=512)
    images = None if pixels is None else Qwen2VLImageProcessorPil(**pixels)
    return Processor(image_processor=images, tokenizer=tokenizer, video_processor=None,
                     chat_template=SYSTEM_TEMPLATE)
