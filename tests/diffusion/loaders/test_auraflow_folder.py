"""AuraFlow folders: the family told from model_index.json, what a broken folder is refused
with (one line naming the file), and the pad token a Llama-style tokenizer (Pile-T5's: no
<pad>, its tokenizer_config.json naming one) gives, as transformers pads with it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import transformers
from flow_tiny import tiny_t5_tokenizer

from diffusion.loaders.auraflow import auraflow_family, load_auraflow_folder, pad_token
from diffusion.loaders.errors import WeightsError
from diffusion.text.t5_tokenizer import T5Tokenizer


@pytest.mark.nodevice
def test_family_and_broken_folders(tiny_auraflow: tuple[Path, Any], tmp_path: Path) -> None:
    folder, _ = tiny_auraflow
    assert auraflow_family(folder) == "auraflow"
    assert auraflow_family(folder / "transformer") is None
    weights = load_auraflow_folder(folder)
    assert weights.transformer is not None and weights.transformer.config["num_mmdit_layers"]
    assert weights.scheduler_config["shift"] == 1.73
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(WeightsError, match=r"tokenizer\.json: required file is missing"):
        load_auraflow_folder(broken)
    shutil.rmtree(broken / "text_encoder")
    index = json.loads((broken / "model_index.json").read_text())
    (broken / "model_index.json").write_text(json.dumps({**index, "text_encoder": [None, None]}))
    with pytest.raises(WeightsError, match="has no 'text_encoder' component"):
        load_auraflow_folder(broken)


@pytest.mark.nodevice
def test_pad_token_of_a_llama_style_tokenizer(tmp_path: Path) -> None:
    """A tokenizer without <pad> whose config names "<unk>" pads with it (ids and mask as
    transformers' fast tokenizer pads); without a config, T5's <pad>."""
    from tokenizers import Tokenizer

    folder = tiny_t5_tokenizer(tmp_path / "t5")
    assert pad_token(folder) == "<pad>"
    llama = tmp_path / "llama"
    llama.mkdir()
    data = json.loads((folder / "tokenizer.json").read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<pad>"]
    Tokenizer.from_str(json.dumps(data)).save(str(llama / "tokenizer.json"))
    (llama / "tokenizer_config.json").write_text(json.dumps(
        {"pad_token": {"content": "<unk>"}, "tokenizer_class": "LlamaTokenizer"}))
    assert pad_token(llama) == "<unk>"
    ours = T5Tokenizer(llama, max_length=40, pad_token=pad_token(llama))
    reference = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(llama / "tokenizer.json"), pad_token="<unk>")
    prompts = ["a red circle", "a blue square on a red circle"]
    expected = reference(prompts, padding="max_length", max_length=40, truncation=True)
    ids, mask = ours.encode(prompts)
    np.testing.assert_array_equal(ids, expected["input_ids"])
    np.testing.assert_array_equal(mask, expected["attention_mask"])
    assert (mask == 0).any()  # padded
