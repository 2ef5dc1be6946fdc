"""HunyuanVideo 1.5's prompt encoders against diffusers' HunyuanVideo15Pipeline's (tiny random
transformers models): the chat the prompt is put in, the quoted texts it renders, the glyph
states (256 ByT5 tokens), Qwen2.5-VL's states with the chat's first 108 tokens dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from diffusers.pipelines.hunyuan_video1_5 import pipeline_hunyuan_video1_5 as reference_module
from hunyuan_video15_text_tiny import tiny_qwen25vl_text, tiny_video_tokenizer
from hunyuanimage_parts_tiny import byt5_tokenizer, tiny_byt5
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.loaders.qwen_image.folder import language_model_config
from diffusion.models.hunyuan_video15_prompt import (
    CROP_START,
    SYSTEM_MESSAGE,
    chat_prompt,
    extract_glyph_texts,
    qwen_video_states,
    video_glyph_states,
)
from diffusion.models.hunyuanimage_prompt import ByT5Tokenizer
from diffusion.models.llm import LLMTextModel
from diffusion.models.t5 import T5EncoderModel
from diffusion.text.llm_tokenizer import LLMTokenizer

Reference = reference_module.HunyuanVideo15Pipeline
TOL = 2e-5  # measured worst |error| / (|e| + rms): ByT5 6.3e-6, Qwen2.5-VL 2.7e-6
PROMPTS = ['a neon sign reading "OPEN" and “营业” then "OPEN" again', "no 'single' quotes",
           'a cup "', ""]


@pytest.mark.nodevice
def test_chat_and_glyph_text_as_diffusers(tmp_path: Path) -> None:
    tokenizer = tiny_video_tokenizer(tmp_path)
    for prompt in PROMPTS:
        assert extract_glyph_texts(prompt) == reference_module.extract_glyph_texts(prompt)
        chat = reference_module.format_text_input([prompt], SYSTEM_MESSAGE)
        assert chat_prompt(prompt) == tokenizer.apply_chat_template(
            chat[0], tokenize=False, add_generation_prompt=True)
    assert extract_glyph_texts(PROMPTS[0]) == 'Text "OPEN". Text "营业". '
    default = Reference._get_mllm_prompt_embeds.__defaults__
    assert SYSTEM_MESSAGE in default and CROP_START in default


def test_glyph_states_as_diffusers(first_device: gpucore.Device) -> None:
    reference, tokenizer = tiny_byt5(), byt5_tokenizer()
    ours = T5EncoderModel(reference.config.to_dict(), device=first_device)
    ours.load_state_dict(state_dict(reference))
    with torch.no_grad():
        expected, expected_mask = Reference._get_byt5_prompt_embeds(
            tokenizer, reference, PROMPTS[:2], device="cpu")
    for row, prompt in enumerate(PROMPTS[:2]):
        got, mask = video_glyph_states(ours, ByT5Tokenizer(), prompt)
        assert got.shape == (1, 256, 32)
        np.testing.assert_array_equal(mask[0], expected_mask[row].numpy())
        keep = mask[0].astype(bool)  # the padded rows are masked wherever they are read
        assert_close(got[0, keep], expected[row].numpy()[keep], tol=TOL)
        assert keep.any() == (row == 0)  # the second prompt quotes nothing: zeros
        assert row == 0 or not got.any()


def test_qwen_states_as_diffusers(first_device: gpucore.Device, tmp_path: Path) -> None:
    reference = tiny_qwen25vl_text()
    tokenizer = tiny_video_tokenizer(tmp_path)
    encoder = LLMTextModel(language_model_config(reference.config.to_dict()),
                           device=first_device)
    encoder.load_state_dict(state_dict(reference))
    prompts = ["a red fox runs in the snow", "two cats", ""]
    with torch.no_grad():
        expected, expected_mask = Reference._get_mllm_prompt_embeds(
            reference, tokenizer, prompts, device="cpu", system_message=SYSTEM_MESSAGE)
    got, mask = qwen_video_states(encoder, LLMTokenizer(tmp_path), prompts)
    assert got.shape == (3, 1000, 40)
    np.testing.assert_array_equal(mask, expected_mask.numpy())
    keep = mask.astype(bool)
    assert_close(got[keep], expected.numpy()[keep], tol=TOL)
    assert not got[~keep].any()
    # the prompt reaches the kept states: the chats' ends differ
    last = [got[i, n - 1] for i, n in enumerate(mask.sum(1))]
    assert np.abs(last[0] - last[1]).mean() > 0.1 * np.abs(got[keep]).mean()
