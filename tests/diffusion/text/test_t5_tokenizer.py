"""T5's tokenizer against transformers' T5TokenizerFast on a tiny Unigram tokenizer.json
trained in-process (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flow_tiny import tiny_t5_tokenizer

from diffusion.text.t5_tokenizer import T5Tokenizer

transformers = pytest.importorskip("transformers", reason="transformers is a test-only reference")

pytestmark = pytest.mark.nodevice


def test_matches_transformers(tmp_path: Path) -> None:
    folder = tiny_t5_tokenizer(tmp_path / "tokenizer_2")
    reference = transformers.T5TokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    ours = T5Tokenizer(folder, max_length=16)
    prompts = ["a cat", "A Red  Fox ridingzz over the moon, a photo of the lazy dog",
               "ｆｕｌｌ", ""]
    expected = reference(prompts, padding="max_length", max_length=16, truncation=True)
    got = ours(prompts)
    np.testing.assert_array_equal(got, np.array(expected.input_ids))
    assert got[1, -1] == 1 and got[0, -1] == 0  # truncated rows keep </s>; short ones pad
    ids, mask = ours.encode(prompts)  # Chroma's pipeline reads the mask too
    np.testing.assert_array_equal(ids, got)
    np.testing.assert_array_equal(mask, np.array(expected.attention_mask))
    np.testing.assert_array_equal(ours("a cat", max_length=5),
                                  reference(["a cat"], padding="max_length", max_length=5,
                                            truncation=True).input_ids)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json"):
        T5Tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not a tokenizers"):
        T5Tokenizer(tmp_path)
    folder = tiny_t5_tokenizer(tmp_path / "ok")
    with pytest.raises(ValueError, match="max_length"):
        T5Tokenizer(folder, max_length=0)
    with pytest.raises(TypeError, match="strings"):
        T5Tokenizer(folder)([3])
