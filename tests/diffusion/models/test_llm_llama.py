"""The LLM text encoder as Llama 3 (HunyuanVideo's llava-llama-3-8b language model) against
transformers' LlamaModel on torch CPU (tests/hunyuan_video_tiny.py's tiny random model), at
the layer HunyuanVideo's pipeline reads: hidden_states[-(num_hidden_layers_to_skip + 1)]."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
import torch
from hunyuan_video_tiny import LLAMA3_ROPE, LLAMA_TINY, tiny_llama
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.llm import LLMTextModel

LAYER = -(2 + 1)  # diffusers' HunyuanVideoPipeline: num_hidden_layers_to_skip=2


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    """Two prompts of 29 and 19 tokens (right padding), long enough that positions pass
    LLAMA3_ROPE's original context of 16."""
    ids = np.random.default_rng(5).integers(3, LLAMA_TINY["vocab_size"], (2, 29))
    mask = np.ones((2, 29), np.int64)
    mask[1, 19:] = 0
    return ids, mask


def _reference(model: torch.nn.Module, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                     output_hidden_states=True).hidden_states[LAYER].float().numpy()


@pytest.mark.parametrize("rope", ["default", "llama3"])
def test_llama_equals_transformers(first_device: gpucore.Device, rope: str) -> None:
    """float32: Llama 3's rope (theta 5e5, no scaling: llava-llama-3-8b's) and Llama 3.1's
    "llama3" scaling, which visibly changes the states (so ours applies it)."""
    overrides = {"rope_parameters": LLAMA3_ROPE} if rope == "llama3" else {}
    reference = tiny_llama(**overrides)
    ours = LLMTextModel(reference.config.to_dict(), device=first_device)
    ours.load_state_dict(state_dict(reference))
    ids, mask = _inputs()
    kept = mask.astype(bool)
    expected = _reference(reference, ids, mask)
    got = ours.hidden_states(ids, mask, layer=LAYER).numpy()
    assert_close(got[kept], expected[kept], tol=1e-4)  # measured 1e-6
    if rope == "llama3":
        plain = _reference(tiny_llama(), ids, mask)
        assert np.abs(plain - expected)[kept].mean() > 0.1 * np.abs(expected[kept]).mean()


def test_llama_float16(f16_device: gpucore.Device) -> None:
    """float16 weights: ours as near transformers' float32 model as its own float16 model on
    CPU is (the tiny random model amplifies float16's rounding: measured worst errors 4.9%
    of the states' mean size for ours, 3.7% for transformers' float16; mean errors 0.46% and
    0.49%)."""
    reference = tiny_llama(rope_parameters=LLAMA3_ROPE)
    ours = LLMTextModel(reference.config.to_dict(), dtype=np.float16, device=f16_device)
    ours.load_state_dict(state_dict(reference))
    ids, mask = _inputs()
    kept = mask.astype(bool)
    got = ours.hidden_states(ids, mask, layer=LAYER).numpy()[kept]
    expected = _reference(reference, ids, mask)[kept]
    half = _reference(reference.half(), ids, mask)[kept]
    size = np.abs(expected).mean()
    assert np.abs(got - expected).max() < 2 * np.abs(half - expected).max()
    assert np.abs(got - expected).mean() < 0.01 * size


@pytest.mark.nodevice
def test_llama_bad_configs_get_one_line() -> None:
    with pytest.raises(ValueError, match="mlp_bias"):
        LLMTextModel({**LLAMA_TINY, "model_type": "llama", "mlp_bias": True})
