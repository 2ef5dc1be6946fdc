"""Sana's schedulers against diffusers: FlowDPMSolverMultistepScheduler against
DPMSolverMultistepScheduler on flow sigmas (Sana's scheduler_config), and SCMScheduler (Sana
Sprint's) against diffusers' SCMScheduler with the same draws: schedules and whole
trajectories of a model that is not the exact velocity. Host logic only."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from support import relative_error

from diffusion.noise.rng import make_generator
from diffusion.sampling.schedulers.dpm_solver_flow import (
    FlowDPMSolverMultistepScheduler,
    is_flow_dpm_solver,
)
from diffusion.sampling.schedulers.scm import SCMScheduler

pytestmark = pytest.mark.nodevice

# Sana_1600M_1024px_diffusers' scheduler/scheduler_config.json
SANA = {"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++",
        "beta_end": 0.02, "beta_schedule": "linear", "beta_start": 0.0001,
        "dynamic_thresholding_ratio": 0.995, "euler_at_final": False,
        "final_sigmas_type": "zero", "flow_shift": 3.0, "lambda_min_clipped": -np.inf,
        "lower_order_final": True, "num_train_timesteps": 1000,
        "prediction_type": "flow_prediction", "sample_max_value": 1.0, "solver_order": 2,
        "solver_type": "midpoint", "steps_offset": 0, "thresholding": False,
        "timestep_spacing": "linspace", "trained_betas": None, "use_beta_sigmas": False,
        "use_exponential_sigmas": False, "use_flow_sigmas": True, "use_karras_sigmas": False,
        "use_lu_lambdas": False, "variance_type": None}


@pytest.mark.parametrize(("shift", "steps", "order"), [(3.0, 20, 2), (6.0, 7, 2), (1.0, 4, 1)])
def test_flow_dpm_solver_equals_diffusers(shift: float, steps: int, order: int) -> None:
    config = {**SANA, "flow_shift": shift, "solver_order": order}
    assert is_flow_dpm_solver(config)
    reference = diffusers.DPMSolverMultistepScheduler.from_config(config)
    ours = FlowDPMSolverMultistepScheduler.from_config(config)
    reference.set_timesteps(steps)
    ours.set_timesteps(steps)
    np.testing.assert_array_equal(ours.timesteps, reference.timesteps.numpy())
    np.testing.assert_array_equal(ours.sigmas, reference.sigmas.numpy())
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((1, 4, 3, 5)).astype(np.float32)
    noise = rng.standard_normal(x0.shape).astype(np.float32)
    x_ref, x_ours = torch.from_numpy(noise), noise.astype(np.float64)
    for t in reference.timesteps:
        v_ref = torch.from_numpy(noise - x0) + 0.1 * torch.sin(x_ref)
        x_ref = reference.step(v_ref, t, x_ref).prev_sample
        x_ours = ours.step(noise - x0 + 0.1 * np.sin(x_ours), int(t), x_ours)
    assert relative_error(np.asarray(x_ours), x_ref.numpy()) < 1e-5


@pytest.mark.parametrize(("steps", "intermediate"), [(2, 1.3), (1, None), (4, None)])
def test_scm_equals_diffusers(steps: int, intermediate: float | None) -> None:
    reference = diffusers.SCMScheduler()
    ours = SCMScheduler.from_config(dict(reference.config))
    reference.set_timesteps(steps, intermediate_timesteps=intermediate)
    ours.set_timesteps(steps, intermediate_timesteps=intermediate)
    np.testing.assert_array_equal(ours.timesteps, reference.timesteps.numpy())
    generator, ours_generator = torch.Generator().manual_seed(3), make_generator("torch", 3)
    x_ref = torch.randn((1, 4, 3, 5), generator=generator)
    x_ours = ours_generator.standard_normal((1, 4, 3, 5)).astype(np.float32)
    np.testing.assert_array_equal(x_ours, x_ref.numpy())
    for t in reference.timesteps[:-1]:
        x_ref, denoised = reference.step(0.3 * torch.sin(x_ref) - x_ref, t, x_ref,
                                         generator=generator, return_dict=False)
        x_ours = ours.step(0.3 * np.sin(x_ours) - x_ours, float(t), x_ours,
                           generator=ours_generator)
    assert relative_error(ours.pred_original_sample, denoised.numpy()) < 1e-6
    assert relative_error(x_ours, x_ref.numpy()) < 1e-6


def test_refuses_what_they_do_not_do() -> None:
    with pytest.raises(ValueError, match="algorithm_type"):
        FlowDPMSolverMultistepScheduler.from_config({**SANA, "algorithm_type": "dpmsolver"})
    assert not is_flow_dpm_solver({**SANA, "use_flow_sigmas": False})
    with pytest.raises(ValueError, match="intermediate timestep is for 2 steps"):
        SCMScheduler().set_timesteps(3, intermediate_timesteps=1.3)
