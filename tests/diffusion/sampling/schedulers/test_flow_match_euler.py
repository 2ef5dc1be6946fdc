"""FlowMatchEulerDiscreteScheduler against diffusers' (SD3 shift, FLUX schnell, FLUX dev's
resolution-dependent shift): schedules, trajectories, img2img noising. Host logic only."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from support import relative_error

from diffusion.sampling.model_sampling import calculate_shift
from diffusion.sampling.schedulers import FlowMatchEulerDiscreteScheduler

pytestmark = pytest.mark.nodevice

FLUX_DEV = {"base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096,
            "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0,
            "use_dynamic_shifting": True}
CASES = {
    "sd3": ({"shift": 3.0}, {}),
    "flux-schnell": ({"shift": 1.0}, {"sigmas": "flux"}),
    "flux-dev": (FLUX_DEV, {"sigmas": "flux", "mu": 4096 // 4}),
    "linear-shift": ({**FLUX_DEV, "time_shift_type": "linear"}, {"mu": 1.3}),
    "shift-terminal": ({"shift": 3.0, "shift_terminal": 0.1}, {}),
}


def _kwargs(kwargs: dict, steps: int, config: dict) -> dict:
    """FluxPipeline's arguments: sigmas linspace(1, 1/n, n), mu from the image tokens."""
    out = dict(kwargs)
    if out.get("sigmas") == "flux":
        out["sigmas"] = np.linspace(1.0, 1 / steps, steps)
    if "mu" in out and isinstance(out["mu"], int):
        out["mu"] = calculate_shift(out["mu"], config)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_trajectory_matches_diffusers(case: str) -> None:
    config, kwargs = CASES[case]
    steps = 7
    args = _kwargs(kwargs, steps, config)
    reference = diffusers.FlowMatchEulerDiscreteScheduler(**config)
    ours = FlowMatchEulerDiscreteScheduler.from_config(config)
    reference.set_timesteps(None if "sigmas" in args else steps, **args)
    ours.set_timesteps(None if "sigmas" in args else steps, **args)
    np.testing.assert_allclose(ours.timesteps, reference.timesteps.numpy(), rtol=1e-6)
    np.testing.assert_allclose(ours.sigmas, reference.sigmas.numpy(), rtol=1e-6, atol=1e-7)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
    expected = torch.from_numpy(x)
    for t_ours, t_ref in zip(ours.timesteps, reference.timesteps):
        velocity = rng.standard_normal(x.shape).astype(np.float32)
        x = ours.step(velocity, t_ours, x)
        expected = reference.step(torch.from_numpy(velocity), t_ref, expected).prev_sample
    assert relative_error(x, expected.numpy()) < 1e-5


def test_flux_dev_shift_by_picture_size() -> None:
    """mu at FLUX dev's 1024x1024 (4096 tokens) is max_shift, at 256 tokens base_shift."""
    assert calculate_shift(4096, FLUX_DEV) == pytest.approx(1.15)
    assert calculate_shift(256, FLUX_DEV) == pytest.approx(0.5)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(FLUX_DEV)
    with pytest.raises(ValueError, match="mu="):
        scheduler.set_timesteps(4)


def test_img2img_noise_matches_diffusers() -> None:
    config = {"shift": 3.0}
    reference = diffusers.FlowMatchEulerDiscreteScheduler(**config)
    ours = FlowMatchEulerDiscreteScheduler(**config)
    reference.set_timesteps(10)
    ours.set_timesteps(10)
    reference.set_begin_index(4)
    ours.set_begin_index(4)
    rng = np.random.default_rng(1)
    sample, noise = (rng.standard_normal((1, 16, 4, 4)).astype(np.float32) for _ in range(2))
    expected = reference.scale_noise(torch.from_numpy(sample), reference.timesteps[4:5],
                                     torch.from_numpy(noise)).numpy()
    got = ours.scale_noise(sample, ours.timesteps[4:5], noise)
    assert relative_error(got, expected) < 1e-6


def test_stochastic_step() -> None:
    """stochastic_sampling re-noises the predicted x0 to the next sigma with the given noise."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0,
         "stochastic_sampling": True})
    scheduler.set_timesteps(3)
    x, velocity, noise = np.full((2, 2), 0.5), np.full((2, 2), 0.25), np.full((2, 2), -1.0)
    sigma, sigma_next = scheduler.sigmas[0], scheduler.sigmas[1]
    got = scheduler.step(velocity, scheduler.timesteps[0], x, noise=noise)
    expected = (1 - sigma_next) * (x - sigma * velocity) + sigma_next * noise
    np.testing.assert_allclose(got, expected)


def test_refused_configs() -> None:
    with pytest.raises(ValueError, match="use_karras_sigmas"):
        FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True)
    with pytest.raises(ValueError, match="time_shift_type"):
        FlowMatchEulerDiscreteScheduler(time_shift_type="cubic")
