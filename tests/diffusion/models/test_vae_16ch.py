"""SD3's and FLUX's 16-channel VAE (no quant convs, shift_factor) against diffusers' on CPU."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
from sd_tiny import VAE_TINY, randomized, state_dict
from test_sd_models import assert_vae_matches

import gpucore
from diffusion.models import AutoencoderKL


def test_vae_16_channels(first_device: gpucore.Device) -> None:
    """The SD VAE's kernels at other channel counts: host logic, so one adapter."""
    device = first_device
    reference = randomized(diffusers.AutoencoderKL(
        **{**VAE_TINY, "latent_channels": 16}, use_quant_conv=False, use_post_quant_conv=False,
        scaling_factor=0.3611, shift_factor=0.1159), 11)
    ours = AutoencoderKL(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))  # no quant_conv.* keys: strict load passes
    assert (ours.scaling_factor, ours.shift_factor) == (0.3611, 0.1159)
    rng = np.random.default_rng(5)
    assert_vae_matches(ours, reference, rng.standard_normal((1, 16, 6, 5)).astype(np.float32),
                       rng.uniform(-1, 1, (1, 3, 16, 12)).astype(np.float32), device)
