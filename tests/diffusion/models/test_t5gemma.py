"""T5Gemma's encoder (PRX's text encoder) against transformers' T5GemmaEncoder on torch CPU
(tiny random weights): the last states of a right-padded batch at its real tokens, the
attention visibly bidirectional, float16 weights; configs it cannot read refused."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
import torch
from prx_tiny import T5GEMMA_TINY, tiny_t5gemma
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.t5gemma import T5GemmaEncoder, t5gemma_key


def _batch(length: int = 21, kept: int = 13) -> tuple[np.ndarray, np.ndarray]:
    """Two prompts of `length` tokens, the first's last ones padding (the right side)."""
    ids = np.random.default_rng(4).integers(3, T5GEMMA_TINY["vocab_size"], (2, length))
    mask = np.ones((2, length), np.int64)
    mask[0, kept:] = 0
    ids[0, kept:] = 0
    return ids, mask


def _reference(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return tiny_t5gemma()(input_ids=torch.from_numpy(ids),
                              attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()


def _ours(device: gpucore.Device, dtype: type = np.float32) -> T5GemmaEncoder:
    reference = tiny_t5gemma()
    ours = T5GemmaEncoder(reference.config.to_dict(), dtype=dtype, device=device)
    ours.load_state_dict({t5gemma_key(k): v for k, v in state_dict(reference).items()})
    return ours


def test_t5gemma_encoder(device: gpucore.Device) -> None:
    """The last (normed) states at the real tokens; a token's states depend on the tokens
    after it (a causal model's would not)."""
    ours = _ours(device)
    ids, mask = _batch()
    expected = _reference(ids, mask)
    got = ours.hidden_states(ids, mask).numpy()
    kept = mask.astype(bool)
    # measured on lavapipe: 1.3e-6
    assert_close(got[kept], expected[kept], tol=5e-6)
    changed = ids.copy()
    changed[1, -1] = 3 + (changed[1, -1] - 2) % (T5GEMMA_TINY["vocab_size"] - 3)
    first = ours.hidden_states(changed, mask).numpy()[1, 0]
    assert np.abs(first - got[1, 0]).mean() > 0.01 * np.abs(got[1, 0]).mean()


def test_t5gemma_encoder_f16(f16_device: gpucore.Device) -> None:
    """float16 weights: float32 states to float16 error."""
    ours = _ours(f16_device, np.float16)
    ids, mask = _batch()
    got = ours.hidden_states(ids, mask).numpy()
    assert got.dtype == np.float32
    kept = mask.astype(bool)
    # measured on lavapipe: 3.0e-3
    assert_close(got[kept], _reference(ids, mask)[kept], tol=5e-3)


@pytest.mark.nodevice
def test_t5gemma_configs() -> None:
    """A whole T5Gemma's config is read at its encoder; another model's is refused."""
    whole = {"model_type": "t5gemma", "encoder": {**T5GEMMA_TINY, "model_type": "x"}}
    from diffusion.models.t5gemma import encoder_config

    assert encoder_config(whole)["num_hidden_layers"] == T5GEMMA_TINY["num_hidden_layers"]
    with pytest.raises(ValueError, match="t5gemma or t5_gemma_module"):
        encoder_config({**T5GEMMA_TINY, "model_type": "gemma2"})
    assert t5gemma_key("encoder.layers.1.pre_self_attn_layernorm.weight") == (
        "layers.1.input_layernorm.weight")
