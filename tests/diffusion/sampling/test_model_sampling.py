"""The model's sampling written once (diffusion.sampling.model_sampling): the flow-matching
schedule against diffusers' FlowMatchEulerDiscreteScheduler (SD3's constant shift, FLUX dev's
shift by picture size), its noising and x0 against the straight path, and the discrete
sigma -> timestep map against diffusers' `_sigma_to_t`. Host logic only."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers

from diffusion.sampling.model_sampling import (
    DiscreteSchedule,
    FlowSchedule,
    calculate_shift,
    discrete_sigma_to_t,
)

pytestmark = pytest.mark.nodevice

SD3 = {"num_train_timesteps": 1000, "shift": 3.0}
FLUX_DEV = {"base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096,
            "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0,
            "use_dynamic_shifting": True}


@pytest.mark.parametrize("steps", [1, 4, 8, 25])
def test_flow_sigmas_are_diffusers_at_steps_dividing_the_table(steps):
    """The "simple" schedule is diffusers' FLUX / SD3 schedule where steps divide 1000."""
    for config, mu in ((SD3, None), (FLUX_DEV, calculate_shift(24 * 40, FLUX_DEV))):
        reference = diffusers.FlowMatchEulerDiscreteScheduler.from_config(config)
        reference.set_timesteps(sigmas=list(np.linspace(1.0, 1 / steps, steps)), mu=mu)
        ours = FlowSchedule(config, mu=mu).get_sigmas(steps)
        assert ours.shape == (steps + 1,) and ours[-1] == 0
        np.testing.assert_allclose(ours, reference.sigmas.double().numpy(), rtol=1e-6, atol=0)
    # the shift matters: SD3's constant 3 bends the schedule towards 1, FLUX's by picture size
    plain = FlowSchedule({"shift": 1.0}).get_sigmas(4)
    assert np.all(FlowSchedule(SD3).get_sigmas(4)[1:-1] > plain[1:-1] + 0.05)
    small, large = (FlowSchedule(FLUX_DEV, mu=calculate_shift(n, FLUX_DEV)).get_sigmas(4)
                    for n in (256, 4096))
    assert np.all(large[1:-1] > small[1:-1] + 0.05)


# Qwen-Image's scheduler config (Qwen/Qwen-Image's scheduler/scheduler_config.json)
QWEN_IMAGE = {"base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 8192,
              "max_shift": 0.9, "num_train_timesteps": 1000, "shift": 1.0,
              "shift_terminal": 0.02, "time_shift_type": "exponential",
              "use_dynamic_shifting": True}


@pytest.mark.parametrize("steps", [2, 4, 8, 25])
def test_flow_sigmas_stretch_to_shift_terminal_as_diffusers(steps):
    """A config's shift_terminal stretches the Simple schedule so its last sigma before 0 is
    that value: diffusers' sigmas (stretch_shift_to_terminal) where steps divide 1000, and
    visibly not the unstretched schedule; without one (every other family), the schedule is
    exactly the shifted table."""
    mu = calculate_shift(64 * 48, QWEN_IMAGE)
    reference = diffusers.FlowMatchEulerDiscreteScheduler.from_config(QWEN_IMAGE)
    reference.set_timesteps(sigmas=list(np.linspace(1.0, 1 / steps, steps)), mu=mu)
    ours = FlowSchedule(QWEN_IMAGE, mu=mu).get_sigmas(steps)
    assert ours.shape == (steps + 1,) and ours[-1] == 0 and ours[-2] == pytest.approx(0.02)
    np.testing.assert_allclose(ours, reference.sigmas.double().numpy(), rtol=1e-6, atol=1e-7)
    plain = {**QWEN_IMAGE, "shift_terminal": None}
    unstretched = FlowSchedule(plain, mu=mu).get_sigmas(steps)
    assert np.abs(ours - unstretched).max() > 0.01
    schedule = FlowSchedule(plain, mu=mu)
    t = np.array([(1000 - int(x * 1000 / steps)) / 1000 for x in range(steps)], np.float64)
    assert np.array_equal(unstretched, np.append(schedule.shifted(t), 0.0))
    assert np.array_equal(FlowSchedule({**plain, "shift_terminal": 0.0}, mu=mu).get_sigmas(steps),
                          unstretched)
    # one step: the lone sigma 1 cannot be stretched (diffusers' answer is NaN); it stays
    assert np.array_equal(FlowSchedule(QWEN_IMAGE, mu=mu).get_sigmas(1), [1.0, 0.0])


def test_flow_noising_and_x0_follow_the_straight_path():
    """x_sigma = sigma noise + (1 - sigma) x0 (diffusers' scale_noise), the model's velocity
    noise - x0 gives x0 back, and the timestep the model sees is 1000 sigma."""
    import torch

    rng = np.random.default_rng(3)
    x0, noise = rng.standard_normal((2, 2, 4, 5, 3)).astype(np.float32)
    schedule = FlowSchedule(SD3)
    reference = diffusers.FlowMatchEulerDiscreteScheduler.from_config(SD3)
    reference.set_timesteps(7)
    t = reference.timesteps[2]
    sigma = float(reference.sigmas[2])
    noisy = schedule.noise_scaling(sigma, noise.astype(np.float64), x0)
    expected = reference.scale_noise(torch.from_numpy(x0), t[None], torch.from_numpy(noise))
    np.testing.assert_allclose(noisy, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert np.array_equal(schedule.noise_scaling(sigma, noise), noise * sigma)
    np.testing.assert_allclose(schedule.denoised(noisy, sigma, noise - x0), x0, atol=1e-6)
    assert schedule.sigma_to_t(sigma) == pytest.approx(float(t), rel=1e-6)
    assert schedule.t_to_sigma(schedule.sigma_to_t(0.25)) == 0.25
    assert schedule.sigma_max == pytest.approx(1.0)
    assert 0 < schedule.sigma_min < 0.01


def test_flow_shift_by_picture_size_needs_mu():
    with pytest.raises(ValueError, match="pass mu"):
        FlowSchedule(FLUX_DEV).get_sigmas(4)


def test_discrete_sigma_to_t_is_diffusers():
    """One sigma -> timestep map for DiscreteSchedule and the sigma-space schedulers."""
    reference = diffusers.EulerDiscreteScheduler.from_config(
        {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"})
    log_sigmas = np.log(((1 - reference.alphas_cumprod) / reference.alphas_cumprod)
                        .double().numpy() ** 0.5)
    sigmas = np.exp(np.random.default_rng(5).uniform(-4, 3, 37))
    expected = reference._sigma_to_t(sigmas, log_sigmas)
    np.testing.assert_allclose(discrete_sigma_to_t(sigmas, log_sigmas), expected, atol=1e-9)
    assert discrete_sigma_to_t(0.0, log_sigmas) == 0
    discrete = DiscreteSchedule.from_config()
    assert np.array_equal(discrete.sigma_to_t(sigmas),
                          discrete_sigma_to_t(sigmas, discrete.log_sigmas))
    noise = np.ones((1, 4, 2, 2))
    assert np.array_equal(discrete.noise_scaling(2.0, noise, np.ones_like(noise)), 3 * noise)
