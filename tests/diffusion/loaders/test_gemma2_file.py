"""Gemma 2 text encoders in one file (ComfyUI's gemma_2_2b for Lumina 2: transformers' names,
bare or under `model.`, a tokenizer tensor beside them) read as the LLM text encoder's weights,
every tensor transformers' own and the config from the shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
import torch
from lumina2_tiny import GEMMA2_TINY, tiny_gemma2_text
from safetensors.torch import save_file
from sd_tiny import state_dict

from diffusion.loaders import WeightsError
from diffusion.loaders.z_image import load_llm_file

pytestmark = pytest.mark.nodevice


@pytest.mark.parametrize("prefix", ["model.", ""])
def test_gemma2_file(tmp_path: Path, prefix: str) -> None:
    expected = state_dict(tiny_gemma2_text())
    path = tmp_path / "gemma_2_2b.safetensors"
    tensors = {prefix + k: torch.from_numpy(v) for k, v in expected.items()}
    save_file({**tensors, "spiece_model": torch.zeros(5, dtype=torch.uint8)}, str(path))
    weights = load_llm_file(path, kind="gemma2", config={"head_dim": GEMMA2_TINY["head_dim"]})
    assert sorted(weights) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value)
    fields = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "vocab_size")
    assert {k: weights.config[k] for k in fields} == {k: GEMMA2_TINY[k] for k in fields}
    assert weights.config["model_type"] == "gemma2"
    assert weights.config["attn_logit_softcapping"] == 50.0  # Gemma-2-2B's, not the tiny's


def test_not_gemma2(tmp_path: Path) -> None:
    """A file without Gemma's sandwich norms (a Qwen2's, Mistral's layers) is refused."""
    path = tmp_path / "other.safetensors"
    save_file({"layers.0.self_attn.q_proj.weight": torch.zeros(4, 4),
               "embed_tokens.weight": torch.zeros(8, 4)}, str(path))
    with pytest.raises(WeightsError, match="not a Gemma 2 text encoder"):
        load_llm_file(path, kind="gemma2")
