"""A float32 VAE run in float16 with a power-of-two scale folded into its weights
(diffusion/models/vae_half.py), its decoder and its encoder: the same output as the float32
pass within f16's rounding where the plain float16 pass overflows, the first pass the float32
one bit for bit, and an overflowing later pass redone in float32 with a new scale."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import gpucore
from bench.vae import TINY_VAE
from diffusion.models import AutoencoderKL
from diffusion.models.tiled_vae import vae_decode, vae_encode
from diffusion.models.vae_half import HalfPasses, Part, half_twin


@pytest.fixture(scope="module")
def vae(f16_device: gpucore.Device) -> AutoencoderKL:
    """A tiny VAE whose decoder's and encoder's streams reach ~1e5: each conv_in's weights
    times 3e4."""
    model = AutoencoderKL(TINY_VAE, device=f16_device)
    rng = np.random.default_rng(0)
    state = {key: (0.2 * rng.standard_normal(t.shape)).astype(np.float32)
             for key, t in model.named_parameters()}
    for key in state:
        if "norm" in key and key.endswith(".weight"):  # GroupNorm scales near 1
            state[key] = 1.0 + 0.1 * state[key]
    for part in ("decoder", "encoder"):
        state[f"{part}.conv_in.weight"] *= 3e4
        state[f"{part}.conv_in.bias"] *= 3e4
    model.load_state_dict(state)
    return model


def _inputs(part: Part, scale: float = 1.0) -> np.ndarray:
    """Latents for the decoder, a picture (8x their size, 3 channels) for the encoder."""
    shape = (1, 4, 8, 8) if part == "decoder" else (1, 3, 32, 40)
    return (scale * np.random.default_rng(1).standard_normal(shape)).astype(np.float32)


def _plain(part: Part) -> Callable[[AutoencoderKL, np.ndarray], np.ndarray]:
    """vae_decode, or vae_encode's mean and logvar stacked as the encoder's moments."""
    if part == "decoder":
        return vae_decode
    return lambda vae, x: np.concatenate(vae_encode(vae, x), axis=1)


def _half(passes: HalfPasses, part: Part, vae: AutoencoderKL, x: np.ndarray) -> np.ndarray:
    if part == "decoder":
        return passes.decode(vae, x)
    mean, logvar = passes.encode(vae, x)
    return np.concatenate([mean, logvar], axis=1)


@pytest.mark.parametrize("part", ["decoder", "encoder"])
def test_the_scaled_half_pass_keeps_the_float32_output(vae: AutoencoderKL, part: Part) -> None:
    x, plain = _inputs(part), _plain(part)
    exact = plain(vae, x)
    f16 = AutoencoderKL(TINY_VAE, dtype=np.float16, device=vae.decoder.conv_in.weight.device)
    f16.load_state_dict(vae.state_dict())
    assert not np.isfinite(plain(f16, x)).all()  # float16 as it is overflows here
    passes = HalfPasses()
    first = _half(passes, part, vae, x)  # calibrates: the float32 pass itself, no twin yet
    assert np.array_equal(first, exact) and not passes.scales
    second = _half(passes, part, vae, x)  # the float16 twin, built now
    assert list(passes.scales) == [(id(vae), part)]  # the other part is not twinned
    assert passes.scales[id(vae), part] >= 3  # the stream's ~1e5 brought under 2^12
    assert np.isfinite(second).all() and not np.array_equal(second, exact)
    assert np.abs(second - exact).max() <= 1e-2 * np.abs(exact).max()
    # with k = 0 the twin is the plain float16 part, and overflows as it does
    twin, none = half_twin(vae, 1.0, part)
    assert none == 0 and not np.isfinite(plain(twin, x)).all()


@pytest.mark.parametrize("part", ["decoder", "encoder"])
def test_a_pass_past_the_scale_is_redone_in_float32(vae: AutoencoderKL, part: Part) -> None:
    passes = HalfPasses()
    for _ in range(2):  # calibrated, then the twin
        _half(passes, part, vae, _inputs(part))
    k = passes.scales[id(vae), part]
    x = _inputs(part, 2e4)  # conv_in's output 2e4 times larger: past the twin's headroom
    got = _half(passes, part, vae, x)
    assert np.array_equal(got, _plain(part)(vae, x))  # float32, and calibrated again
    assert np.isfinite(_half(passes, part, vae, x)).all()  # a new twin
    assert passes.scales[id(vae), part] > k


def test_it_applies_to_float32_vaes_of_float16_pipelines_only(vae: AutoencoderKL) -> None:
    matrix = bool(vae.decoder.conv_in.weight.device.info.matrix_configs)
    for part in ("decoder", "encoder"):
        shape = _inputs(part).shape
        assert HalfPasses.applies(vae, np.float32, shape, part) is False
        assert HalfPasses.applies(vae, np.float16, shape, part) is matrix
