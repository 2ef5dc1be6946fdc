"""`sample_pass(denoised=...)`: each model call's x0 reaches the live previews' hook, and the
pass is the one it runs without the hook, a CFG++ sampler's (which reads `model.uncond`) too."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion.sampling import kdiffusion
from diffusion.sampling.kdiffusion_pass import WebUISeeds, sample_pass
from diffusion.sampling.model_sampling import DiscreteSchedule


class _Denoiser:
    """x0 from x as a fixed map, with an unconditional x0 for the CFG++ samplers."""

    def __init__(self) -> None:
        self.calls, self.uncond = 0, None

    def __call__(self, x: np.ndarray, sigma: float) -> np.ndarray:
        self.calls += 1
        self.uncond = 0.8 * x / (1.0 + sigma**2) ** 0.5
        return np.tanh(x / (1.0 + sigma)) + 0.05 * sigma


@pytest.mark.nodevice
@pytest.mark.parametrize("sampler", ["Euler", "Heun", "Euler CFG++"])
def test_denoised_sees_every_prediction_and_changes_nothing(sampler: str) -> None:
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    discrete = DiscreteSchedule(np.cumprod(1.0 - betas))
    plan = kdiffusion.plan(sampler, "Automatic", 4, discrete)
    seeds = WebUISeeds([3], [], 0.0, 0)

    def run(model: _Denoiser, **hook: object) -> np.ndarray:
        return sample_pass(plan, discrete, model, seeds, rng="numpy", shape=(4, 3, 5),
                           options=kdiffusion.SamplerOptions(), **hook)  # type: ignore[arg-type]

    plain = run(_Denoiser())
    model, seen = _Denoiser(), []
    hooked = run(model, denoised=lambda x0: seen.append(np.array(x0, copy=True)))
    np.testing.assert_array_equal(hooked, plain)
    assert len(seen) == model.calls >= 4 and seen[0].shape == (1, 4, 3, 5)
    # the hook gets the model's x0, not the sampler's x: Euler's last step lands on it
    if sampler == "Euler":
        np.testing.assert_allclose(hooked, seen[-1], rtol=1e-12, atol=1e-12)
