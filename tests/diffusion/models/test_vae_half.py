"""A float32 VAE decoded in float16 with a power-of-two scale folded into its weights
(diffusion/models/vae_half.py): the same picture as the float32 decode within f16's rounding
where the plain float16 decode overflows, the first decode the float32 one bit for bit, and an
overflowing later decode redone in float32 with a new scale."""

from __future__ import annotations

import numpy as np
import pytest

import gpucore
from bench.vae import TINY_VAE
from diffusion.models import AutoencoderKL
from diffusion.models.tiled_vae import vae_decode
from diffusion.models.vae_half import HalfDecodes, half_twin


@pytest.fixture(scope="module")
def vae(f16_device: gpucore.Device) -> AutoencoderKL:
    """A tiny VAE whose decoder's stream reaches ~1e5: conv_in's weights times 3e4."""
    model = AutoencoderKL(TINY_VAE, device=f16_device)
    rng = np.random.default_rng(0)
    state = {key: (0.2 * rng.standard_normal(t.shape)).astype(np.float32)
             for key, t in model.named_parameters()}
    for key in state:
        if "norm" in key and key.endswith(".weight"):  # GroupNorm scales near 1
            state[key] = 1.0 + 0.1 * state[key]
    state["decoder.conv_in.weight"] *= 3e4
    state["decoder.conv_in.bias"] *= 3e4
    model.load_state_dict(state)
    return model


def _latents(scale: float = 1.0) -> np.ndarray:
    return (scale * np.random.default_rng(1).standard_normal((1, 4, 8, 8))).astype(np.float32)


def test_the_scaled_half_decode_keeps_the_float32_picture(vae: AutoencoderKL) -> None:
    z = _latents()
    exact = vae_decode(vae, z)
    plain = AutoencoderKL(TINY_VAE, dtype=np.float16, device=vae.decoder.conv_in.weight.device)
    plain.load_state_dict(vae.state_dict())
    assert not np.isfinite(vae_decode(plain, z)).all()  # float16 as it is overflows here
    decodes = HalfDecodes()
    first = decodes.decode(vae, z)  # calibrates: the float32 decode itself, no twin yet
    assert np.array_equal(first, exact) and not decodes.scales
    second = decodes.decode(vae, z)  # the float16 twin, built now
    k = decodes.scales[id(vae)]
    assert k >= 3  # the stream's ~1e5 brought under 2^12
    assert np.isfinite(second).all() and not np.array_equal(second, exact)
    assert np.abs(second - exact).max() <= 1e-2 * np.abs(exact).max()
    # with k = 0 the twin is the plain float16 decoder, and overflows as it does
    twin, none = half_twin(vae, 1.0)
    assert none == 0 and not np.isfinite(vae_decode(twin, z)).all()


def test_a_decode_past_the_scale_is_redone_in_float32(vae: AutoencoderKL) -> None:
    decodes = HalfDecodes()
    for _ in range(2):  # calibrated, then the twin
        decodes.decode(vae, _latents())
    k = decodes.scales[id(vae)]
    z = _latents(2e4)  # conv_in's output 2e4 times larger: past the twin's headroom
    got = decodes.decode(vae, z)
    assert np.array_equal(got, vae_decode(vae, z))  # float32, and calibrated again
    assert np.isfinite(decodes.decode(vae, z)).all()  # a new twin
    assert decodes.scales[id(vae)] > k


def test_it_applies_to_float32_vaes_of_float16_pipelines_only(vae: AutoencoderKL) -> None:
    shape = (1, 4, 8, 8)
    matrix = vae.decoder.conv_in.weight.device.info.matrix_configs
    assert HalfDecodes.applies(vae, np.float32, shape) is False
    assert HalfDecodes.applies(vae, np.float16, shape) is bool(matrix)
