"""The UMT5 encoder (Wan's text encoder) against transformers' UMT5EncoderModel on torch CPU:
a tiny random model fed a tiny T5-shaped tokenizer's ids and padding mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
import torch
import transformers
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


def test_float16_holds_a_residual_stream_past_float16s_range(f16_device: gpucore.Device) -> None:
    """float16 weights: the residual stream and the feed-forward's `wo` stay float32 (as
    transformers keeps `wo`), so activations past float16's 65504 (the feed-forward's output
    scaled up, as UMT5-XXL's real ones grow) still give transformers' float32 output."""
    reference = tiny_umt5()
    with torch.no_grad():
        for block in reference.encoder.block:
            block.layer[1].DenseReluDense.wo.weight.mul_(3e5)
    ids = np.random.default_rng(9).integers(0, 120, (2, 23))
    mask = (np.arange(23) < [[23], [11]]).astype(np.int64)
    with torch.no_grad():
        out = reference(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                        output_hidden_states=True)
    assert max(h.abs().max().item() for h in out.hidden_states) > 4 * 65504
    ours = UMT5EncoderModel(reference.config.to_dict(), dtype=np.float16, device=f16_device)
    ours.load_state_dict(state_dict(reference), dtype=None)
    got = ours(ids, mask).numpy().astype(np.float32)
    assert np.isfinite(got).all()
    assert_close(got, out.last_hidden_state.numpy(), tol=2e-2)


@pytest.mark.nodevice
def test_position_buckets_at_wans_length() -> None:
    """umt5-xxl's 32 buckets up to distance 128 over 512 tokens (WanPipeline's length):
    the logarithmic buckets past 8 and the last bucket past 128, as transformers'."""
    from transformers.models.umt5.modeling_umt5 import UMT5Attention

    from diffusion.models.t5 import relative_position_buckets

    config = transformers.UMT5Config(d_model=8, d_kv=2, num_heads=4, num_layers=1, d_ff=8,
                                     relative_attention_num_buckets=32,
                                     relative_attention_max_distance=128)
    attention = UMT5Attention(config, has_relative_attention_bias=True)
    position = torch.arange(512)
    expected = attention._relative_position_bucket(position[None, :] - position[:, None])
    ours = relative_position_buckets(512, 32, 128)
    assert len(np.unique(ours)) == 31  # every bucket but the positive side's distance 0
    np.testing.assert_array_equal(ours, expected.numpy())
