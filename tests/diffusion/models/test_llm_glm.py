"""The LLM text encoder as GLM-4 (CogView4's GLM-4-9B: partial interleaved rotary, a fused
gate_up_proj, q/k/v biases) against transformers' GlmModel on torch CPU
(tests/cogview4_tiny.py's tiny random model), at the layer CogView4Pipeline reads:
hidden_states[-2], with its left padding attended (the pipeline passes no mask)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
import torch
from cogview4_tiny import GLM_TINY, tiny_glm
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.llm import LLMTextModel


def _ids() -> np.ndarray:
    """Two prompts of 32 tokens (CogView4 pads to a multiple of 16), the second's first 9
    padding (id 0) on the left as the pipeline pads."""
    ids = np.random.default_rng(3).integers(2, GLM_TINY["vocab_size"], (2, 32))
    ids[1, :9] = 0
    return ids


def _reference(model: torch.nn.Module, ids: np.ndarray, layer: int) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), output_hidden_states=True
                     ).hidden_states[layer].float().numpy()


@pytest.mark.parametrize("layer", [-2, -1])
def test_glm_equals_transformers(first_device: gpucore.Device, layer: int) -> None:
    """float32, the pipeline's layer and the final norm's output."""
    reference = tiny_glm()
    ours = LLMTextModel(reference.config.to_dict(), device=first_device)
    ours.load_state_dict(state_dict(reference))
    ids = _ids()
    expected = _reference(reference, ids, layer)
    assert_close(ours.hidden_states(ids, layer=layer).numpy(), expected, tol=1e-4)


def test_glm_rotary_matters(first_device: gpucore.Device) -> None:
    """The rotation visibly moves the states: a GLM rotating the whole head (factor 1)
    differs, so ours turning only the first half is tested, not ignored."""
    ids = _ids()
    half = _reference(tiny_glm(), ids, -2)
    whole = tiny_glm(partial_rotary_factor=1.0)
    ours = LLMTextModel(whole.config.to_dict(), device=first_device)
    ours.load_state_dict(state_dict(whole))
    expected = _reference(whole, ids, -2)
    assert_close(ours.hidden_states(ids, layer=-2).numpy(), expected, tol=1e-4)
    assert np.abs(half - expected).mean() > 0.05 * np.abs(expected).mean()


def test_glm_float16(f16_device: gpucore.Device) -> None:
    """float16 weights: ours as near transformers' float32 model as its own float16 model."""
    reference = tiny_glm()
    ours = LLMTextModel(reference.config.to_dict(), dtype=np.float16, device=f16_device)
    ours.load_state_dict(state_dict(reference))
    ids = _ids()
    got = ours.hidden_states(ids, layer=-2).numpy()
    expected = _reference(reference, ids, -2)
    half = _reference(reference.half(), ids, -2)
    assert np.abs(got - expected).max() < 2 * np.abs(half - expected).max()
    assert np.abs(got - expected).mean() < 0.01 * np.abs(expected).mean()


@pytest.mark.nodevice
def test_glm_bad_rotary_gets_one_line() -> None:
    with pytest.raises(ValueError, match="partial_rotary_factor"):
        LLMTextModel({**GLM_TINY, "model_type": "glm", "partial_rotary_factor": 0.01}
                     ).rotary(4)
