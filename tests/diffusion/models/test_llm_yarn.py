"""The LLM text encoder with YaRN rotary scaling (Ministral 3's Mistral, ERNIE-Image's text
encoder) against transformers' MistralModel on torch CPU (tiny, random): ERNIE-Image's
parameters (mscale = mscale_all_dim: an attention factor of 1) and YaRN's inferred attention
factor (0.1 ln(factor) + 1, scaling cos and sin), each visibly changing the states."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
import torch
from flux2_dev_tiny import MISTRAL_TINY
from sd_tiny import randomized, state_dict
from support import assert_close

import gpucore
from diffusion.models.llm import LLMTextModel

# a ramp over a few of the 6 frequencies (the original context short, the base small);
# factor x original = the config's max_position_embeddings, as transformers expects
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
        "original_max_position_embeddings": 256, "beta_fast": 32.0, "beta_slow": 1.0}
ERNIE = {**YARN, "mscale": 1.0, "mscale_all_dim": 1.0}


def _mistral(rope: dict[str, Any] | None) -> Any:
    import transformers

    config = {**MISTRAL_TINY, "num_hidden_layers": 3, "rope_theta": 10000.0}
    if rope is not None:
        config["rope_parameters"] = rope
    return randomized(transformers.MistralModel(transformers.MistralConfig(**config)), 4,
                      scale=0.6).eval()


def _states(model: Any, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids),
                     output_hidden_states=True).hidden_states[-2].numpy()


@pytest.mark.parametrize("rope", [ERNIE, YARN], ids=["ernie", "inferred-attention"])
def test_yarn_equals_transformers(first_device: gpucore.Device, rope: dict[str, Any]) -> None:
    reference = _mistral(rope)
    ours = LLMTextModel(reference.config.to_dict(), device=first_device)
    ours.load_state_dict(state_dict(reference))
    ids = np.random.default_rng(6).integers(3, MISTRAL_TINY["vocab_size"], (1, 40))
    expected = _states(reference, ids)
    # measured on lavapipe: 1.3e-5 and 1.2e-5 (the plain rotation of these weights: 7.9e-6)
    assert_close(ours.hidden_states(ids, layer=-2).numpy(), expected, tol=1e-4)
    plain = _states(_mistral(None), ids)  # the same weights, the plain rotation
    assert np.abs(plain - expected).mean() > 0.02 * np.abs(expected).mean()
