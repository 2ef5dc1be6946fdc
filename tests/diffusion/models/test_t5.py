"""The T5 encoder against transformers' T5EncoderModel on torch CPU (a tiny random model)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
import torch
from flow_tiny import T5_TINY, tiny_t5
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models import T5EncoderModel
from diffusion.models.t5 import relative_position_buckets

# f32 through every layer: the worst element's |error| / (rms + |expected|)
# (support.assert_close's rule) measured on lavapipe and llvmpipe is 5.4e-6
TOL = 5e-5


@pytest.mark.nodevice
def test_relative_position_buckets() -> None:
    from transformers.models.t5.modeling_t5 import T5Attention

    position = torch.arange(300)
    relative = position[None, :] - position[:, None]
    for buckets, distance in ((8, 20), (32, 128)):
        expected = T5Attention._relative_position_bucket(relative, True, buckets, distance)
        np.testing.assert_array_equal(relative_position_buckets(300, buckets, distance),
                                      expected.numpy())


def test_t5_encoder(device: gpucore.Device) -> None:
    reference = tiny_t5()
    ours = T5EncoderModel(reference.config.to_dict(), device=device)
    weights = state_dict(reference)
    assert "encoder.embed_tokens.weight" in weights  # the tied alias is accepted
    ours.load_state_dict(weights)
    ids = np.random.default_rng(0).integers(0, T5_TINY['vocab_size'], (2, 23))
    with torch.no_grad():
        expected = reference(torch.from_numpy(ids)).last_hidden_state.numpy()
    assert_close(ours(ids).numpy(), expected, tol=TOL)
    # a safetensors file holds shared.weight alone; a ComfyUI-style one the alias alone
    alias_only = {k: v for k, v in weights.items() if k != "shared.weight"}
    ours.load_state_dict(alias_only)
    assert_close(ours(ids).numpy(), expected, tol=TOL)
    # Chroma's padding mask: the padded rows attend to the prompt's tokens only
    mask = np.ones((2, 23), np.int64)
    mask[0, 9:] = mask[1, 17:] = 0
    with torch.no_grad():
        masked = reference(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
                           ).last_hidden_state.numpy()
    assert np.abs(masked - expected).mean() > 0.01  # the mask matters
    assert_close(ours(ids, mask).numpy(), masked, tol=TOL)


@pytest.mark.nodevice
def test_t5_rejects_other_feed_forward() -> None:
    with pytest.raises(ValueError, match="gated-gelu"):
        T5EncoderModel({**T5_TINY, "feed_forward_proj": "relu"})


def test_t5_encoder_f16_keeps_large_activations(f16_device: gpucore.Device) -> None:
    """float16 weights with feed-forward outputs past float16's 65504 (as T5-XXL's reach):
    the float32 residual stream and `wo` keep them; the final RMS norm brings them back."""
    reference = tiny_t5()
    with torch.no_grad():
        for block in reference.encoder.block:
            block.layer[1].DenseReluDense.wo.weight.mul_(50000.0)
    ours = T5EncoderModel(reference.config.to_dict(), dtype=np.float16, device=f16_device)
    ours.load_state_dict(state_dict(reference))
    assert ours.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == np.float32
    ids = np.random.default_rng(1).integers(0, T5_TINY["vocab_size"], (1, 9))
    with torch.no_grad():
        out = reference(torch.from_numpy(ids), output_hidden_states=True)
    # the stream after the first block (hidden_states[-1] is after the final norm)
    assert np.abs(out.hidden_states[-2].numpy()).max() > 65504  # float16 would overflow
    got = ours(ids).numpy()
    assert got.dtype == np.float16
    # the worst element's |error| / (rms + |expected|) measured on lavapipe: 6.6e-3 (float16
    # rounding, the same on every run: 4x)
    assert_close(got.astype(np.float32), out.last_hidden_state.numpy(), tol=2.5e-2)
