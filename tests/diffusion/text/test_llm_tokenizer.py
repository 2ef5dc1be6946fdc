"""The LLM tokenizer and Qwen3's chat prompt against transformers' tokenizer of the same
tokenizer.json (a tiny byte-level BPE built in the test) and its apply_chat_template."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
from zimage_tiny import tiny_qwen_tokenizer, transformers_tokenizer

from diffusion.text.llm_tokenizer import LLMTokenizer, qwen3_chat_prompt

pytestmark = pytest.mark.nodevice

PROMPTS = ["a red circle on a blue background", "", "an astronaut, riding a horse!  ünïcode",
           "the quick brown fox " * 200]


@pytest.mark.parametrize("thinking", [True, False])
def test_chat_prompt_equals_transformers(tmp_path: Path, thinking: bool) -> None:
    reference = transformers_tokenizer(tiny_qwen_tokenizer(tmp_path))
    for prompt in PROMPTS:
        expected = reference.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True,
            enable_thinking=thinking)
        assert qwen3_chat_prompt(prompt, enable_thinking=thinking) == expected


@pytest.mark.parametrize("side", ["right", "left"])
def test_ids_equal_transformers(tmp_path: Path, side: str) -> None:
    """Padding to 512 and truncation as ZImagePipeline calls the tokenizer; the long prompt
    is cut at 512 tokens."""
    folder = tiny_qwen_tokenizer(tmp_path)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "padding_side": side}))
    reference = transformers_tokenizer(folder)
    reference.padding_side = side
    prompts = [qwen3_chat_prompt(p) for p in PROMPTS]
    expected = reference(prompts, padding="max_length", max_length=512, truncation=True,
                         return_tensors="np")
    ids, mask = LLMTokenizer(folder)(prompts, 512)
    np.testing.assert_array_equal(ids, expected.input_ids)
    np.testing.assert_array_equal(mask, expected.attention_mask)
    assert mask[3].all() and not mask[0].all()
    assert len(reference(prompts[3]).input_ids) > 512  # the long prompt is cut
    special = [reference.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>")]
    assert set(special) <= set(ids[0].tolist())  # the template's tokens are single ids
    if side == "right":  # "longest" is "max_length" cut after the longest prompt
        short, short_mask = LLMTokenizer(folder)(prompts[:3], 512, padding="longest")
        width = short.shape[1]
        np.testing.assert_array_equal(short, expected.input_ids[:3, :width])
        np.testing.assert_array_equal(short_mask, expected.attention_mask[:3, :width])
        assert expected.attention_mask[:3, width:].sum() == 0


def test_missing_tokenizer_gets_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no tokenizer\.json"):
        LLMTokenizer(tmp_path)
