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


def test_saved_padding_not_applied(tmp_path: Path) -> None:
    """A tokenizer.json transformers saved after a padded call (its padding and truncation
    left on, as diffusers' save_pretrained of a used pipeline writes it) gives the same ids
    and mask as the clean file."""
    folder = tiny_qwen_tokenizer(tmp_path / "clean")
    reference = transformers_tokenizer(folder)
    reference(PROMPTS[:2], padding="max_length", max_length=300, truncation=True)
    reference.save_pretrained(tmp_path / "used")
    saved = json.loads((tmp_path / "used" / "tokenizer.json").read_text())
    assert saved["padding"] and saved["truncation"]
    for padding in ("longest", "max_length"):
        ids, mask = LLMTokenizer(tmp_path / "used")(PROMPTS[:2], 100, padding=padding)
        clean_ids, clean_mask = LLMTokenizer(folder)(PROMPTS[:2], 100, padding=padding)
        np.testing.assert_array_equal(ids, clean_ids)
        np.testing.assert_array_equal(mask, clean_mask)


def test_missing_tokenizer_gets_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no tokenizer\.json"):
        LLMTokenizer(tmp_path)


def _slow_folder(tmp_path: Path) -> Path:
    """tiny_qwen_tokenizer's BPE as a slow Qwen2Tokenizer's files (vocab.json, merges.txt,
    the added tokens in tokenizer_config.json), without tokenizer.json."""
    data = json.loads((tiny_qwen_tokenizer(tmp_path / "fast") / "tokenizer.json").read_text())
    folder = tmp_path / "slow"
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(data["model"]["vocab"]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    added = {str(t["id"]): {"content": t["content"], "special": True, "lstrip": False,
                            "rstrip": False, "normalized": False, "single_word": False}
             for t in data["added_tokens"]}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "added_tokens_decoder": added, "pad_token": "<|endoftext|>",
        "tokenizer_class": "Qwen2Tokenizer"}))
    return folder


def test_vocab_files_equal_transformers(tmp_path: Path) -> None:
    """A folder of vocab.json and merges.txt (Qwen-Image's tokenizer/) tokenizes as
    transformers' Qwen2Tokenizer of the same files (special tokens, digits, newlines, runs of
    spaces, accents)."""
    import transformers

    folder = _slow_folder(tmp_path)
    reference = transformers.Qwen2Tokenizer.from_pretrained(str(folder))
    prompts = ["<|im_start|>system\nDescribe the image:<|im_end|>\n<|im_start|>user\n"
               "a red circle, 1234 cats\n\n  and   dogs<|im_end|>\n<|im_start|>assistant\n",
               "Ünïcödé — naïve café's 42nd street", "tabs\tand\r\nreturns  "]
    ids, mask = LLMTokenizer(folder)(prompts, 512, padding="longest")
    expected = reference(prompts, padding="longest", return_tensors="np")
    np.testing.assert_array_equal(ids, expected.input_ids)
    np.testing.assert_array_equal(mask, expected.attention_mask)


@pytest.mark.parametrize("post_processor", [True, False])
def test_gemma_bos_equals_transformers(tmp_path: Path, post_processor: bool) -> None:
    """Gemma's tokenizer (ltx2_text_tiny's) left-padded as LTX2Pipeline calls it: <bos> first,
    whether tokenizer.json's post-processor writes it or, the file holding none, the config's
    add_bos_token asks for it (transformers writes the post-processor then)."""
    import transformers
    from ltx2_text_tiny import tiny_gemma_tokenizer

    folder = tiny_gemma_tokenizer(tmp_path)
    if not post_processor:
        data = json.loads((folder / "tokenizer.json").read_text())
        (folder / "tokenizer.json").write_text(json.dumps({**data, "post_processor": None}))
        config = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "tokenizer_config.json").write_text(json.dumps({**config,
                                                                  "add_bos_token": True}))
    reference = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), bos_token="<bos>", pad_token="<pad>",
        add_bos_token=True, padding_side="left")
    prompts = ["a cat walks on the beach", "waves roll in"]
    expected = reference(prompts, padding="max_length", max_length=16, truncation=True,
                         return_tensors="np")
    ids, mask = LLMTokenizer(folder)(prompts, 16)
    np.testing.assert_array_equal(ids, expected.input_ids)
    np.testing.assert_array_equal(mask, expected.attention_mask)
    assert ids[1, 16 - mask[1].sum()] == 2 and mask[1, 0] == 0  # <bos> after left padding
