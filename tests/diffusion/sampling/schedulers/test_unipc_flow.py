"""FlowUniPCMultistepScheduler against diffusers' UniPCMultistepScheduler on flow sigmas (Wan's
scheduler_config): schedules and whole trajectories of a velocity model. Host logic only."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from support import relative_error

from diffusion.sampling.schedulers.unipc_flow import FlowUniPCMultistepScheduler, is_flow_unipc

pytestmark = pytest.mark.nodevice

# Wan 2.1 T2V's scheduler/scheduler_config.json (480p's flow_shift 3.0 and 720p's 5.0)
WAN = {"_class_name": "UniPCMultistepScheduler", "beta_end": 0.02, "beta_schedule": "linear",
       "beta_start": 0.0001, "disable_corrector": [], "dynamic_thresholding_ratio": 0.995,
       "final_sigmas_type": "zero", "flow_shift": 3.0, "lower_order_final": True,
       "num_train_timesteps": 1000, "predict_x0": True, "prediction_type": "flow_prediction",
       "rescale_betas_zero_snr": False, "sample_max_value": 1.0, "solver_order": 2,
       "solver_p": None, "solver_type": "bh2", "steps_offset": 0, "thresholding": False,
       "timestep_spacing": "linspace", "trained_betas": None, "use_beta_sigmas": False,
       "use_exponential_sigmas": False, "use_flow_sigmas": True, "use_karras_sigmas": False}


# Cosmos Predict2.5's kind: Karras' EDM sigmas as flow sigmas, maybe ending on the last
KARRAS = {"use_karras_sigmas": True, "sigma_max": 200.0, "sigma_min": 0.01}


@pytest.mark.parametrize(("shift", "steps", "order", "more"), [
    (3.0, 12, 2, {}), (5.0, 7, 2, {}), (1.0, 5, 3, {}), (1.0, 6, 2, KARRAS),
    (1.0, 6, 2, {**KARRAS, "final_sigmas_type": "sigma_min"})])
def test_trajectory_equals_diffusers(shift: float, steps: int, order: int,
                                     more: dict[str, object]) -> None:
    config = {**WAN, "flow_shift": shift, "solver_order": order, **more}
    assert is_flow_unipc(config)
    reference = diffusers.UniPCMultistepScheduler.from_config(config)
    ours = FlowUniPCMultistepScheduler.from_config(config)
    reference.set_timesteps(steps)
    ours.set_timesteps(steps)
    np.testing.assert_array_equal(ours.timesteps, reference.timesteps.numpy())
    np.testing.assert_allclose(ours.sigmas, reference.sigmas.numpy(), rtol=1e-6)
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((1, 4, 3, 5)).astype(np.float32)
    noise = rng.standard_normal(x0.shape).astype(np.float32)
    x_ref, x_ours = torch.from_numpy(noise), noise.astype(np.float64)
    for t in reference.timesteps:
        # a model that is not the exact velocity, so the corrector and history matter
        v_ref = torch.from_numpy(noise - x0) + 0.1 * torch.sin(x_ref)
        x_ref = reference.step(v_ref, t, x_ref).prev_sample
        x_ours = ours.step(noise - x0 + 0.1 * np.sin(x_ours), int(t), x_ours)
    assert relative_error(np.asarray(x_ours), x_ref.numpy()) < 1e-4


def test_refuses_what_it_does_not_do() -> None:
    with pytest.raises(ValueError, match="use_dynamic_shifting"):
        FlowUniPCMultistepScheduler.from_config({**WAN, "use_dynamic_shifting": True})
    with pytest.raises(ValueError, match="needs sigma_min and sigma_max"):
        FlowUniPCMultistepScheduler.from_config({**WAN, "use_karras_sigmas": True}
                                                ).set_timesteps(4)
    assert not is_flow_unipc({**WAN, "use_flow_sigmas": False})
