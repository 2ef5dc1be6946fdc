"""LTX-2's prompt parts from a diffusers folder (transformers' and diffusers' own save_pretrained
of tiny random models): the Gemma 3 language model out of Gemma3ForConditionalGeneration, the
connectors, the tokenizer; broken folders refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
from ltx2_text_tiny import (
    tiny_connectors,
    tiny_gemma3_folder,
    tiny_gemma3_text,
    tiny_gemma_tokenizer,
)
from sd_tiny import state_dict

import gpucore
from diffusion.loaders.errors import WeightsError
from diffusion.loaders.ltx2.text import load_ltx2_text, ltx2_text_models
from diffusion.models.llm import LLMTextModel
from diffusion.models.ltx2_connectors import LTX2TextConnectors
from diffusion.models.ltx2_prompt import ltx2_prompt_states
from diffusion.text.llm_tokenizer import LLMTokenizer


def _folder(root: Path) -> Path:
    tiny_gemma3_folder(root / "text_encoder")
    tiny_connectors().save_pretrained(root / "connectors")
    tiny_gemma_tokenizer(root / "tokenizer")
    return root


def test_folder_gives_the_models_weights(first_device: gpucore.Device, tmp_path: Path) -> None:
    """The loaded parts give the prompt states of the models built from the references'
    own weights, bit for bit (the vision tower's tensors skipped, none missing)."""
    weights = load_ltx2_text(_folder(tmp_path))
    assert not any("vision" in key for key in weights.text_encoder.refs)
    text_model, connectors, tokenizer = ltx2_text_models(weights, device=first_device)
    reference = tiny_gemma3_text()
    direct = LLMTextModel(reference.config.to_dict(), device=first_device)
    direct.load_state_dict(state_dict(reference))
    joined = LTX2TextConnectors(dict(tiny_connectors().config), device=first_device)
    joined.load_state_dict(state_dict(tiny_connectors()))
    prompt = "a cat walks on the beach"
    got = ltx2_prompt_states(text_model, connectors, tokenizer, prompt, 32)
    expected = ltx2_prompt_states(direct, joined, LLMTokenizer(tmp_path / "tokenizer"), prompt,
                                  32)
    for ours, theirs in zip(got[:2], expected[:2], strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_broken_folders_refused(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    config = root / "text_encoder" / "config.json"
    saved = config.read_text()
    config.write_text(json.dumps({"model_type": "qwen3", "hidden_size": 8}))
    with pytest.raises(WeightsError, match="LTX-2's text encoder is Gemma 3"):
        load_ltx2_text(root)
    config.write_text(saved)
    shutil.rmtree(root / "tokenizer")
    with pytest.raises(WeightsError, match=r"tokenizer\.json: required file is missing"):
        load_ltx2_text(root)
    shutil.rmtree(root / "connectors")
    with pytest.raises(WeightsError, match="connectors: component folder is missing"):
        load_ltx2_text(root)
