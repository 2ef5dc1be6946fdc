"""Gemma 2 (Lumina Image 2.0's text encoder) in the LLM text encoder against transformers'
Gemma2Model on torch CPU (tiny random weights): every hidden state of a right-padded batch
(Lumina2Pipeline's side), the soft cap visibly at work, and float16 weights."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
import torch
from lumina2_tiny import GEMMA2_TINY, tiny_gemma2_text
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.llm import LLMTextModel

TOL = 5e-6  # float32: measured 1.3e-6 (float16: 3.4e-3 against its 5e-3)


def _batch(length: int = 21, kept: int = 13) -> tuple[np.ndarray, np.ndarray]:
    """Two prompts of `length` tokens, the first's last ones padding (the right side)."""
    ids = np.random.default_rng(4).integers(3, GEMMA2_TINY["vocab_size"], (2, length))
    mask = np.ones((2, length), np.int64)
    mask[0, kept:] = 0
    ids[0, kept:] = 0
    return ids, mask


def _every_layer(ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = tiny_gemma2_text()(input_ids=torch.from_numpy(ids),
                                 attention_mask=torch.from_numpy(mask), output_hidden_states=True)
    return [h.numpy() for h in out.hidden_states]


def _ours(config: dict, device: gpucore.Device, dtype: type = np.float32) -> LLMTextModel:
    ours = LLMTextModel(config, dtype=dtype, device=device)
    ours.load_state_dict(state_dict(tiny_gemma2_text()))
    return ours


def test_gemma2_every_hidden_state(device: gpucore.Device) -> None:
    """Every hidden state (scaled embeddings, each layer's output, the normed last) at the
    real tokens; without the soft cap they differ visibly (the cap binds on these scores)."""
    ours = _ours(tiny_gemma2_text().config.to_dict(), device)
    ids, mask = _batch()
    expected = _every_layer(ids, mask)
    got = ours.hidden_states_of(ids, mask, range(len(expected)))
    kept = mask.astype(bool)
    for states, reference in zip(got, expected, strict=True):
        assert_close(states.numpy()[kept], reference[kept], tol=TOL)
    for layer in ours.layers:
        layer.self_attn.softcap = None
    uncapped = ours.hidden_states(ids, mask, -2).numpy()[kept]
    change = np.abs(uncapped - expected[-2][kept]).mean() / np.abs(expected[-2]).mean()
    assert change > 0.1  # measured 0.21


def test_gemma2_f16_from_raw_config(f16_device: gpucore.Device) -> None:
    """float16 weights from a config as Gemma-2-2B's config.json writes it (no layer_types,
    a top-level rope_theta: the alternating local layers and the base from the defaults):
    the second-to-last layer, which Lumina reads, to float16 error."""
    raw = {k: v for k, v in GEMMA2_TINY.items() if k != "rope_parameters"}
    ours = _ours({**raw, "model_type": "gemma2", "rope_theta": 100.0}, f16_device, np.float16)
    assert ours.window == GEMMA2_TINY["sliding_window"]
    ids, mask = _batch()
    kept = mask.astype(bool)
    got = ours.hidden_states(ids, mask, -2).numpy()
    assert got.dtype == np.float32
    assert_close(got[kept], _every_layer(ids, mask)[-2][kept], tol=5e-3)
