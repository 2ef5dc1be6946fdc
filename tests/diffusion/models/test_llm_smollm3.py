"""The LLM text encoder as SmolLM3 (Bria FIBO's encoder) against transformers'
SmolLM3ForCausalLM on torch CPU (tests/bria_fibo_tiny.py's tiny random model): every hidden
state, as BriaFiboPipeline reads them all, with its fourth layer NoPE."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
import torch
from bria_fibo_tiny import SMOLLM3_TINY, tiny_smollm3
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.loaders.formats.diffusers_folder import causal_lm_refs
from diffusion.models.llm import LLMTextModel, _roped

LAYERS = list(range(SMOLLM3_TINY["num_hidden_layers"] + 1))


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    """Two prompts of 23 and 15 tokens (right padding)."""
    ids = np.random.default_rng(5).integers(3, 300, (2, 23))
    mask = np.ones((2, 23), np.int64)
    mask[1, 15:] = 0
    return ids, mask


def _reference(model: torch.nn.Module, ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                    output_hidden_states=True)
    return [state.float().numpy() for state in out.hidden_states]


def test_smollm3_equals_transformers(first_device: gpucore.Device) -> None:
    """float32, every hidden state (the last after the final norm); the NoPE layer visibly
    changes the states (transformers with every layer roped differs), so ours leaves it
    unturned."""
    reference = tiny_smollm3()
    ours = LLMTextModel(reference.config.to_dict(), device=first_device)
    assert ours.roped == [True, True, True, False]
    ours.load_state_dict(causal_lm_refs(state_dict(reference)))
    ids, mask = _inputs()
    kept = mask.astype(bool)
    expected = _reference(reference, ids, mask)
    got = [state.numpy() for state in ours.hidden_states_of(ids, mask, LAYERS)]
    for ours_state, theirs in zip(got, expected, strict=True):
        assert_close(ours_state[kept], theirs[kept], tol=1e-4)  # measured 1e-6
    reference.config.no_rope_layers = [1] * SMOLLM3_TINY["num_hidden_layers"]
    for layer in reference.model.layers:
        layer.self_attn.use_rope = True
    roped = _reference(reference, ids, mask)[-1]
    assert np.abs(roped - expected[-1])[kept].mean() > 0.05 * np.abs(expected[-1][kept]).mean()


def test_smollm3_float16(f16_device: gpucore.Device) -> None:
    """float16 weights, every hidden state: ours as near transformers' float32 model as its own
    float16 model on CPU is (worst errors within twice its, mean errors under 1% of the
    states' mean size)."""
    reference = tiny_smollm3()
    ours = LLMTextModel(reference.config.to_dict(), dtype=np.float16, device=f16_device)
    ours.load_state_dict(causal_lm_refs(state_dict(reference)))
    ids, mask = _inputs()
    kept = mask.astype(bool)
    expected = _reference(reference, ids, mask)
    half = _reference(reference.half(), ids, mask)
    got = ours.hidden_states_of(ids, mask, LAYERS)
    for ours_state, theirs, theirs16 in zip(got, expected, half, strict=True):
        error = np.abs(ours_state.numpy()[kept] - theirs[kept])
        assert error.max() <= 2 * np.abs(theirs16[kept] - theirs[kept]).max() + 1e-6
        assert error.mean() < 0.01 * np.abs(theirs[kept]).mean()


@pytest.mark.nodevice
def test_roped_flags() -> None:
    """no_rope_layers as given, else the interval; a short list refused in one line."""
    assert _roped({"num_hidden_layers": 3, "no_rope_layers": [1, 0, 1]}) == [True, False, True]
    assert _roped({"num_hidden_layers": 4, "no_rope_layer_interval": 2}) == [
        True, False, True, False]
    assert _roped({"num_hidden_layers": 2}) == [True, True]
    with pytest.raises(ValueError, match="no_rope_layers names 1 layers"):
        _roped({"num_hidden_layers": 2, "no_rope_layers": [1]})
