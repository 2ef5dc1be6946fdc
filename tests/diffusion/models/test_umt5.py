"""The UMT5 encoder (Wan's text encoder) against transformers' UMT5EncoderModel on torch CPU:
a tiny random model fed a tiny T5-shaped tokenizer's ids and padding mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
import torch
from flow_tiny import tiny_t5_tokenizer
from sd_tiny import state_dict
from support import assert_close
from wan_tiny import tiny_umt5

import gpucore
from diffusion.models.t5 import T5EncoderModel, UMT5EncoderModel
from diffusion.text.t5_tokenizer import T5Tokenizer

TOL = 1e-3


def test_umt5_encoder(device: gpucore.Device, tmp_path: Path) -> None:
    reference = tiny_umt5()
    ours = UMT5EncoderModel(reference.config.to_dict(), device=device)
    weights = state_dict(reference)
    assert "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in weights
    ours.load_state_dict(weights)
    tokenizer = T5Tokenizer(tiny_t5_tokenizer(tmp_path / "tokenizer"), max_length=19)
    ids, mask = tokenizer.encode(["a red cube on a table", "two blue spheres"])
    assert mask.sum(axis=1).min() < 19  # padded
    with torch.no_grad():
        expected = reference(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
                             ).last_hidden_state.numpy()
    assert_close(ours(ids, mask).numpy(), expected, tol=TOL)
    # the second block's own table matters: T5's stack (the first table only) differs
    t5 = T5EncoderModel(reference.config.to_dict(), device=device)
    t5.load_state_dict({k: v for k, v in weights.items()
                        if "relative_attention_bias" not in k or ".block.0." in k})
    assert np.abs(t5(ids, mask).numpy() - expected).mean() > 0.01
