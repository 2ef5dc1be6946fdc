"""HunyuanImage 2.1's prompt encoders against diffusers' HunyuanImagePipeline's and
transformers' (tiny random models): the quoted texts it renders, ByT5's byte tokenizer, the
glyph states, Qwen2.5-VL's states of the templated prompt with the template dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from diffusers.pipelines.hunyuan_image.pipeline_hunyuanimage import (
    HunyuanImagePipeline,
)
from diffusers.pipelines.hunyuan_image.pipeline_hunyuanimage import (
    extract_glyph_text as reference_glyph_text,
)
from hunyuanimage_parts_tiny import byt5_tokenizer, tiny_byt5
from qwenimage_tiny import tiny_qwen25vl
from sd_tiny import state_dict
from support import assert_close
from zimage_tiny import tiny_qwen_tokenizer, transformers_tokenizer

import gpucore
from diffusion.loaders.qwen_image.folder import language_model_config
from diffusion.models.hunyuanimage_prompt import (
    ByT5Tokenizer,
    extract_glyph_text,
    glyph_states,
    qwen_states,
)
from diffusion.models.llm import LLMTextModel
from diffusion.models.t5 import T5EncoderModel
from diffusion.text.llm_tokenizer import LLMTokenizer

TOL = 2e-5  # measured worst |error| / (|e| + rms): ByT5 2.3e-6, Qwen2.5-VL 1.7e-6
PROMPTS = ['a shop sign reading "OPEN" and \'late\'', "“你好” ‘hi’ and \"x\" and 'y'",
           "no quotes here", 'a cup "']


@pytest.mark.nodevice
def test_glyph_text_as_diffusers() -> None:
    for prompt in PROMPTS:
        assert extract_glyph_text(prompt) == reference_glyph_text(prompt)
    assert extract_glyph_text(PROMPTS[0]) == 'Text "late". Text "OPEN". '


@pytest.mark.nodevice
def test_byt5_tokenizer_as_transformers(tmp_path: Path) -> None:
    reference = byt5_tokenizer(tmp_path)
    ours = ByT5Tokenizer.from_dir(tmp_path)
    rng = np.random.default_rng(0)
    alphabet = [*list("ab Z.\"'é你😀 "), "</s>", " <pad> ", "<extra_id_3>", "<unk>"]
    texts = ["".join(rng.choice(alphabet, rng.integers(0, 30))) for _ in range(40)]
    for text in [*texts, "x" * 200, ""]:
        expected = reference(text, padding="max_length", max_length=128, truncation=True)
        ids, mask = ours(text)
        assert ids[0].tolist() == expected.input_ids, text
        assert mask[0].tolist() == expected.attention_mask, text
    assert ByT5Tokenizer().ids("a</s>") == [100, 1]  # ByT5's own specials without a folder


def test_glyph_states_as_diffusers(first_device: gpucore.Device) -> None:
    reference, tokenizer = tiny_byt5(), byt5_tokenizer()
    ours = T5EncoderModel(reference.config.to_dict(), device=first_device)
    ours.load_state_dict(state_dict(reference))
    for prompt in PROMPTS[:2]:
        with torch.no_grad():
            expected, expected_mask = HunyuanImagePipeline._get_byt5_prompt_embeds(
                None, tokenizer, reference, reference_glyph_text(prompt), device="cpu",
                dtype=torch.float32)
        got, mask = glyph_states(ours, ByT5Tokenizer(), prompt)
        np.testing.assert_array_equal(mask, expected_mask.numpy())
        keep = mask[0].astype(bool)  # the padded rows are masked wherever they are read
        assert_close(got[:, keep], expected.numpy()[:, keep], tol=TOL)
    empty, empty_mask = glyph_states(ours, ByT5Tokenizer(), "no quotes")
    assert empty.shape == (1, 128, 32) and not empty.any() and not empty_mask.any()


def test_qwen_states_as_diffusers(first_device: gpucore.Device, tmp_path: Path) -> None:
    reference = tiny_qwen25vl()
    folder = tiny_qwen_tokenizer(tmp_path / "tokenizer")
    encoder = LLMTextModel(language_model_config(reference.config.to_dict()),
                           device=first_device)
    encoder.load_state_dict({k.removeprefix("model.language_model."): v
                             for k, v in state_dict(reference).items()
                             if k.startswith("model.language_model.")})
    prompts = ["a red fox in the snow", "two cats"]
    with torch.no_grad():
        expected, expected_mask = HunyuanImagePipeline._get_qwen_prompt_embeds(
            None, transformers_tokenizer(folder), reference, prompts, device="cpu",
            dtype=torch.float32)
    got, mask = qwen_states(encoder, LLMTokenizer(folder), prompts)
    length = mask.shape[1]
    assert mask.sum(1).tolist() == expected_mask.sum(1).tolist()
    np.testing.assert_array_equal(mask, expected_mask.numpy()[:, :length])
    keep = mask.astype(bool)
    assert_close(got[keep], expected.numpy()[:, :length][keep], tol=TOL)
    assert not got[~keep].any()
    last = [got[i, n - 1] for i, n in enumerate(mask.sum(1))]  # each prompt's own end
    assert np.abs(last[0] - last[1]).mean() > 0.1 * np.abs(got[keep]).mean()
