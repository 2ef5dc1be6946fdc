"""The refiner hand-off: a second model takes over the sampling part-way through.

WebUI (its samplers; `sd_samplers_common.apply_refiner`): before each model evaluation the
completed ratio is `(999 - timestep) / 1000`, the timestep being the index of the model's
training sigma nearest the current sigma (a timestep sampler's own timestep); from the first
evaluation where it reaches `switch_at` on, the refiner's UNet runs with the refiner's own
conditioning (for the SDXL refiner: OpenCLIP-G and the aesthetic scores) on the same latents
and the same sigmas. (The WebUI's default since 1.7; "Refiner switch by sampling steps", the
older per-step count, is not offered.)

diffusers (`sampler="diffusers"`; its "ensemble of expert denoisers"): the base runs its
scheduler's timesteps down to the cutoff `round(T - switch_at * T)` (`denoising_end`), then
the refiner runs its own scheduler's timesteps below the cutoff (`denoising_start`) from the
base's latents, no noise added, the random draws continuing from the same generator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ...sampling.model_sampling import DiscreteSchedule
from ..contract import Pipeline

__all__ = ["HandOff", "check_refiner", "cutoff"]


def check_refiner(base: Any, refiner: Any, switch_at: Any, mode: str) -> float:
    """`switch_at` as a float after checking that `refiner` can take over from `base` in
    `mode`; ValueError saying what is wrong otherwise."""
    if isinstance(switch_at, bool) or not isinstance(switch_at, (int, float)) or not (
            0.0 < float(switch_at) < 1.0):
        raise ValueError(f"refiner switch at must be a fraction of the sampling between 0 and "
                         f"1 (exclusive), e.g. 0.8; got {switch_at!r}")
    if not isinstance(refiner, Pipeline):
        raise ValueError(f"refiner must be a loaded model (diffusion.load_pipeline), got "
                         f"{type(refiner).__name__}")
    ours, theirs = base.capabilities, refiner.capabilities
    if not theirs.refiner or ours.latent_space != theirs.latent_space:
        raise ValueError(f"refiner {refiner.name!r} is a {refiner.family} model and cannot "
                         f"continue the latents of {base.name!r} (a {base.family} model); an "
                         "SDXL base hands over to the SDXL refiner (or another SDXL model)")
    if theirs.inpainting_model or mode == "inpaint":
        raise ValueError("the refiner takes over txt2img and img2img; inpainting runs without "
                         "one")
    return float(switch_at)


def cutoff(scheduler: Any, fraction: float) -> int:
    """diffusers' `discrete_timestep_cutoff` of `denoising_end` / `denoising_start`."""
    total = int(scheduler.config.get("num_train_timesteps", 1000))
    return round(total - fraction * total)


def _completed(t: float, discrete: DiscreteSchedule | None) -> float:
    """The WebUI's completed ratio at model timestep `t`."""
    if discrete is None:  # a timestep sampler: t is the timestep
        return (999 - int(t)) / 1000
    sigma = float(discrete.t_to_sigma(t))
    timestep = int(np.argmin(np.abs(discrete.sigmas.astype(np.float32) - np.float32(sigma))))
    return (999 - timestep) / 1000


class HandOff:
    """A GuidedUNet that becomes the refiner's (built by `make_refiner` at the switch) once the
    completed ratio reaches `switch_at`. `switched_at`: the model evaluation it switched at."""

    def __init__(self, base: Any, make_refiner: Callable[[], Any], switch_at: float,
                 discrete: DiscreteSchedule | None) -> None:
        self.current = base
        self.make_refiner = make_refiner
        self.switch_at = switch_at
        self.discrete = discrete
        self.switched_at: int | None = None

    @property
    def weights(self) -> Any:
        """The AND parts' guidance weights (GuidedUNet.weights): the refiner reads
        the same prompt, so the same parts."""
        return self.current.weights

    def __call__(self, model_in: np.ndarray, t: float, step: int
                 ) -> tuple[np.ndarray | None, np.ndarray]:
        if self.switched_at is None and _completed(t, self.discrete) >= self.switch_at:
            self.current = self.make_refiner()
            self.switched_at = step
        return self.current(model_in, t, step)
