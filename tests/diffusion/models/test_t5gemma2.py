"""T5Gemma 2's text encoder (Motif-Video's) against transformers' T5Gemma2Encoder on torch
CPU (tiny random weights): a left-padded batch read bidirectionally at each prompt's kept
tokens, float16 weights, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
import torch
from motif_tiny import T5GEMMA2_TEXT_TINY, tiny_t5gemma2_encoder
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.t5gemma2 import T5Gemma2TextModel, t5gemma2_text_weights

TOL = 5e-6  # float32: measured 9.7e-7 (float16 weights: 3.9e-3 against 5e-3)


def _batch() -> tuple[np.ndarray, np.ndarray]:
    """Two prompts of 12 tokens, the first's 5 first ones padding (the left side, as
    Gemma's tokenizer pads)."""
    ids = np.random.default_rng(4).integers(3, T5GEMMA2_TEXT_TINY["vocab_size"], (2, 12))
    mask = np.ones((2, 12), np.int64)
    mask[0, :5] = 0
    ids[0, :5] = 0
    return ids, mask


def _reference(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return tiny_t5gemma2_encoder()(input_ids=torch.from_numpy(ids),
                                       attention_mask=torch.from_numpy(mask)
                                       ).last_hidden_state.numpy()


def _ours(device: gpucore.Device, dtype: type = np.float32) -> T5Gemma2TextModel:
    reference = tiny_t5gemma2_encoder()
    ours = T5Gemma2TextModel(reference.config.to_dict(), dtype=dtype, device=device)
    ours.load_state_dict(t5gemma2_text_weights(state_dict(reference)))
    return ours


def test_t5gemma2_states_both_ways(device: gpucore.Device) -> None:
    """Each prompt's kept tokens; the first token's state depends on the last token (the
    encoder reads ahead: a causal one would not see it)."""
    ours = _ours(device)
    ids, mask = _batch()
    expected = _reference(ids, mask)
    got = ours.encode(ids, mask)
    for row, states in enumerate(got):
        assert_close(states.numpy()[0], expected[row][mask[row] != 0], tol=TOL)
    changed = ids.copy()
    changed[1, -1] = ids[1, -1] + 1
    first = ours.encode(changed[1:], mask[1:])[0].numpy()[0, 0]
    assert np.abs(first - got[1].numpy()[0, 0]).mean() > 1e-3 * np.abs(first).mean()


def test_t5gemma2_f16(f16_device: gpucore.Device) -> None:
    ours = _ours(f16_device, np.float16)
    ids, mask = _batch()
    expected = _reference(ids, mask)
    for row, states in enumerate(ours.encode(ids, mask)):
        assert states.dtype == np.float32
        assert_close(states.numpy()[0], expected[row][mask[row] != 0], tol=5e-3)


def test_t5gemma2_refusals(device: gpucore.Device) -> None:
    """A prompt past the local window's reach, the end-of-image token, a config of
    another model: one-line errors."""
    config = {**T5GEMMA2_TEXT_TINY, "model_type": "t5gemma2_text", "sliding_window": 9}
    ours = T5Gemma2TextModel({"model_type": "t5gemma2_encoder", "text_config": config},
                             device=device)
    with pytest.raises(ValueError, match="past the 5 that"):
        ours.encode(np.arange(3, 9)[None])
    with pytest.raises(ValueError, match="end-of-image"):
        ours.encode(np.array([[2, 256_000]]))
    with pytest.raises(ValueError, match="T5Gemma 2's"):
        T5Gemma2TextModel({"model_type": "gemma3", "text_config": config})
