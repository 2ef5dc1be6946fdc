"""The clean latents (x0) the timestep samplers report for live previews: scheduler_loop hands
each step's prediction to `denoised`: DDIM's and UniPC's are (x_t - sqrt(1 - abar_t) eps) /
sqrt(abar_t) of the step's own noise prediction, Euler's x - sigma eps, PLMS's the x0 of its
combined noise estimate (the one DDIM step from x_t to the next sample it takes), and watching
them leaves the latents bitwise as they are. Host logic only, random noise predictions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from diffusion.sampling.scheduler_loop import scheduler_loop
from diffusion.sampling.schedulers import (
    DDIMScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

pytestmark = pytest.mark.nodevice

SHAPE = (2, 4, 5, 7)


def _run(scheduler: Any, steps: int, watch: bool = True) -> tuple[np.ndarray, list[Any]]:
    """The loop over random noise predictions: (final latents, per step (latents before,
    eps, latents after, x0 reported))."""
    scheduler.set_timesteps(steps)
    rng = np.random.default_rng(3)
    latents = rng.standard_normal(SHAPE).astype(np.float32) * np.float32(
        scheduler.init_noise_sigma)
    seen: list[Any] = []
    before = [latents]
    eps_of: list[np.ndarray] = []
    x0s: list[np.ndarray] = []

    def predict(model_in: np.ndarray, t: Any, i: int) -> tuple[np.ndarray, None]:
        eps_of.append(rng.standard_normal(SHAPE).astype(np.float32))
        return eps_of[-1], None

    def step(done: int, total: int, after: np.ndarray) -> None:
        seen.append((before[-1], eps_of[-1], after, x0s[-1] if watch else None))
        before.append(after)

    final = scheduler_loop(latents, scheduler.timesteps, scheduler, predict, callback=step,
                           denoised=x0s.append if watch else None)
    assert not watch or len(x0s) == len(seen) == len(scheduler.timesteps)
    return final, seen


def _x0_of(x: np.ndarray, eps: np.ndarray, abar: float) -> np.ndarray:
    return (x.astype(np.float64) - np.sqrt(1 - abar) * eps) / np.sqrt(abar)


@pytest.mark.parametrize("kind", [DDIMScheduler, UniPCMultistepScheduler])
def test_ddim_and_unipc_report_the_x0_of_each_steps_noise(kind: Any) -> None:
    config = {"clip_sample": False} if kind is DDIMScheduler else {}
    scheduler = kind.from_config(config)
    _, seen = _run(scheduler, 6)
    for t, (x, eps, _, x0) in zip(scheduler.timesteps, seen, strict=True):
        abar = float(scheduler.alphas_cumprod[int(t)])
        assert x0.dtype == np.float32 and x0.shape == SHAPE
        np.testing.assert_allclose(x0, _x0_of(x, eps, abar), rtol=1e-5, atol=1e-5)
    _, _, after, x0 = seen[0]
    assert np.abs(x0 - after).max() > 0.1  # a prediction, not the step's latents


def test_ddim_reports_its_clipped_x0() -> None:
    scheduler = DDIMScheduler.from_config({"clip_sample": True})
    _, seen = _run(scheduler, 4)
    x, eps, _, x0 = seen[0]
    abar = float(scheduler.alphas_cumprod[int(scheduler.timesteps[0])])
    np.testing.assert_allclose(x0, np.clip(_x0_of(x, eps, abar), -1, 1), rtol=1e-5, atol=1e-5)
    assert np.abs(_x0_of(x, eps, abar)).max() > 1.5  # the clip mattered


def test_euler_reports_x_minus_sigma_eps() -> None:
    scheduler = EulerDiscreteScheduler.from_config({})
    _, seen = _run(scheduler, 5)
    for sigma, (x, eps, _, x0) in zip(scheduler.sigmas[:-1], seen, strict=True):
        np.testing.assert_allclose(x0, x - sigma * eps.astype(np.float64), rtol=1e-5,
                                   atol=1e-4)


def test_plms_reports_the_x0_its_step_goes_through() -> None:
    # PLMS's step from x_t to x_prev is DDIM's through x0 with the combined noise estimate
    # e: x_t = sqrt(a_t) x0 + sqrt(1 - a_t) e and x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) e
    scheduler = PNDMScheduler.from_config({})
    steps = 5
    _, seen = _run(scheduler, steps)
    stride = 1000 // steps
    timesteps = [int(t) for t in scheduler.timesteps]
    for k, (x, _, after, x0) in enumerate(seen):
        t = timesteps[k]
        if k == 1:  # the warm-up re-runs the first step, from the first latents
            x, t = seen[0][0], timesteps[0]
        a_t = float(scheduler.alphas_cumprod[t])
        a_prev = float(scheduler.alphas_cumprod[t - stride]) if t - stride >= 0 else float(
            scheduler.alphas_cumprod[0])
        x0 = x0.astype(np.float64)
        e = (x - np.sqrt(a_t) * x0) / np.sqrt(1 - a_t)
        np.testing.assert_allclose(after, np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * e,
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", [DDIMScheduler, PNDMScheduler, UniPCMultistepScheduler])
def test_watching_x0_leaves_the_latents_bitwise(kind: Any) -> None:
    watched, _ = _run(kind.from_config({}), 4)
    plain, _ = _run(kind.from_config({}), 4, watch=False)
    np.testing.assert_array_equal(watched, plain)
