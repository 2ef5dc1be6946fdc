"""A tiny random QwenImageEditPipeline folder built in-process (diffusers, transformers,
tokenizers): Qwen-Image's tiny parts, a tokenizer with Qwen2.5-VL's vision tokens, a text
encoder with a two-block vision tower (windows of 2x2 merge blocks) and a processor whose
pixel limits keep the reference's vision grid small."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qwenimage_tiny import QWENIMAGE_SCHEDULER, tiny_qwenimage_transformer, tiny_qwenimage_vae
from sd_tiny import randomized
from zimage_tiny import QWEN3_TINY, tiny_qwen_tokenizer

VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
VISION_TINY = dict(depth=2, hidden_size=16, intermediate_size=24, num_heads=2, window_size=56,
                   out_hidden_size=QWEN3_TINY["hidden_size"], fullatt_block_indexes=[1])
PIXEL_LIMITS = {"min_pixels": 56 * 56, "max_pixels": 84 * 112}


def _tokenizer(folder: Path) -> tuple[Any, dict[str, int]]:
    """tiny_qwen_tokenizer's with the vision tokens after its own (the vocabulary stays
    QWEN3_TINY's), and transformers' tokenizer of it; also the vision tokens' ids."""
    import transformers
    from tokenizers import Tokenizer

    tiny_qwen_tokenizer(folder, vocab_size=QWEN3_TINY["vocab_size"] - len(VISION_TOKENS))
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.add_special_tokens(VISION_TOKENS)
    tokenizer.save(str(folder / "tokenizer.json"))
    ids = {token: tokenizer.token_to_id(token) for token in VISION_TOKENS}
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), pad_token="<|endoftext|>",
        eos_token="<|im_end|>", model_max_length=512)
    return fast, ids


def _processor_class() -> Any:
    """transformers' Qwen2VLProcessor without a video processor (whose class needs
    torchvision, which the references do without)."""
    import transformers

    class Processor(transformers.Qwen2VLProcessor):  # type: ignore[misc]
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

        def save_pretrained(self, directory: Any, **kwargs: Any) -> None:
            self.image_processor.save_pretrained(directory)  # preprocessor_config.json
            self.tokenizer.save_pretrained(directory)

    return Processor


def tiny_vision_text_encoder(root: Path) -> tuple[Any, Any]:
    """(transformers' Qwen2_5_VLForConditionalGeneration with VISION_TINY's tower, a
    Qwen2VLProcessor over the tokenizer with the vision tokens, its files in
    `root / "edit-tokenizer"`, and Qwen2VLImageProcessorPil of PIXEL_LIMITS): what an edit
    pipeline reads its prompt and pictures with."""
    import transformers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    tokenizer, ids = _tokenizer(root / "edit-tokenizer")
    text = {k: v for k, v in QWEN3_TINY.items() if k not in ("head_dim", "tie_word_embeddings")}
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6,
                               "mrope_section": [1, 2, 2]}
    config = transformers.Qwen2_5_VLConfig(
        text_config=text, vision_config=VISION_TINY, image_token_id=ids["<|image_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"])
    encoder = randomized(transformers.Qwen2_5_VLForConditionalGeneration(config), 3, scale=0.5)
    processor = _processor_class()(
        image_processor=Qwen2VLImageProcessorPil(**PIXEL_LIMITS), tokenizer=tokenizer)
    return encoder, processor


def tiny_qwenimage_edit_pipeline(root: Path) -> Any:
    """diffusers' QwenImageEditPipeline of tiny random parts saved to `root / "qwen-edit"`;
    returns the pipeline."""
    import diffusers

    encoder, processor = tiny_vision_text_encoder(root)
    tokenizer = processor.tokenizer
    pipe = diffusers.QwenImageEditPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**QWENIMAGE_SCHEDULER),
        vae=tiny_qwenimage_vae(), text_encoder=encoder, tokenizer=tokenizer,
        processor=processor, transformer=tiny_qwenimage_transformer())
    pipe.save_pretrained(root / "qwen-edit")
    index = root / "qwen-edit" / "model_index.json"  # the processor as a real folder names it
    index.write_text(json.dumps({**json.loads(index.read_text()),
                                 "processor": ["transformers", "Qwen2VLProcessor"]}))
    return pipe


@contextmanager
def read_at_area(pipe: Any, area: int) -> Iterator[None]:
    """diffusers' QwenImageEditPipeline `pipe` patched in two ways while inside: the reference
    at `area` pixels (its 1024 x 1024 would be slow here), and the text encoder given
    `mm_token_type_ids`, without which transformers 5 builds no multimodal positions
    (transformers 4, which Qwen-Image-Edit was made with, found the image tokens itself)."""
    import pytest
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit as module

    dimensions = module.calculate_dimensions
    patch = pytest.MonkeyPatch()
    patch.setattr(module, "calculate_dimensions", lambda _, ratio: dimensions(area, ratio))
    encoder, image_token = pipe.text_encoder, pipe.text_encoder.config.image_token_id
    forward = encoder.forward

    def with_types(input_ids: Any = None, **kwargs: Any) -> Any:
        return forward(input_ids=input_ids, mm_token_type_ids=(input_ids == image_token).int(),
                       **kwargs)

    patch.setattr(encoder, "forward", with_types)
    try:
        yield
    finally:
        patch.undo()
