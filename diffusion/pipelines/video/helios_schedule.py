"""Helios' one-stage schedule (diffusers' HeliosScheduler with `stages` 1, as HeliosPipeline
sets it up for every chunk): flow sigmas linspace(0.999, 0, steps + 1) without the last,
bent by the folder's dynamic shift (mu of the chunk's token count) where it asks for one,
then 0; the model embeds sigma x 1000 (not rounded). Stepped by UniPC (the same B(h)
predictor-corrector as Wan's, sigma_t kept at least 1e-8 as Helios does) or by Euler."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...sampling.schedulers.unipc_flow import FlowUniPCMultistepScheduler

__all__ = ["HeliosUniPC", "helios_mu", "helios_scheduler"]


def helios_mu(tokens: int, config: dict[str, Any]) -> float:
    """The dynamic shift of a chunk of `tokens` patches, from the scheduler config's
    base/max image_seq_len and shift (diffusers' defaults 256, 4096, 0.5, 1.15). diffusers:
    helios' `calculate_shift`."""
    base_len = config.get("base_image_seq_len", 256)
    max_len = config.get("max_image_seq_len", 4096)
    base, top = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (top - base) / (max_len - base_len)
    return float(tokens * slope + base - slope * base_len)


def helios_sigmas(steps: int, mu: float, config: dict[str, Any]) -> np.ndarray:
    """The steps' sigmas and the final 0 (float64). diffusers: `HeliosScheduler.set_timesteps(
    steps, sigmas=np.linspace(0.999, 0.0, steps + 1)[:-1], mu=mu)`."""
    sigmas = np.append(np.linspace(0.999, 0.0, steps + 1)[:-1], 0.0)
    if not config.get("use_dynamic_shifting", False):
        return sigmas
    with np.errstate(divide="ignore"):
        bent = 1 / sigmas - 1
    if config.get("time_shift_type", "exponential") == "exponential":
        return math.exp(mu) / (math.exp(mu) + bent)  # type: ignore[no-any-return]
    return mu / (mu + bent)  # type: ignore[no-any-return]


class HeliosUniPC(FlowUniPCMultistepScheduler):
    """UniPC over `helios_sigmas`; its timesteps sigma x 1000 as floats."""

    def set_sigmas(self, sigmas: np.ndarray) -> None:
        """Use `sigmas` (the steps' and a final 0) as the schedule."""
        self.sigmas = np.asarray(sigmas, np.float64)
        self._reset(self.sigmas[:-1] * self.config["num_train_timesteps"])
        self._outputs, self._lower_order_nums = [], 0
        self._last_sample, self._this_order = None, 1

    @staticmethod
    def _alpha_sigma(sigma: Any) -> tuple[Any, Any]:
        """(1 - sigma, sigma at least 1e-8): HeliosScheduler's clamp keeps lambda finite at 0."""
        return 1 - sigma, max(sigma, 1e-8)


class _HeliosEuler:
    """Euler on `helios_sigmas`: x + (sigma_next - sigma) v. diffusers: `HeliosScheduler
    (scheduler_type="euler").step`."""

    def set_sigmas(self, sigmas: np.ndarray) -> None:
        self.sigmas = np.asarray(sigmas, np.float64)
        self.timesteps = self.sigmas[:-1] * 1000
        self._index = 0

    def step(self, velocity: np.ndarray, t: Any, sample: np.ndarray) -> np.ndarray:
        i = self._index
        self._index += 1
        return (sample + (self.sigmas[i + 1] - self.sigmas[i]) * velocity).astype(np.float32)


def helios_scheduler(config: dict[str, Any]) -> HeliosUniPC | _HeliosEuler:
    """The stepper of a Helios folder's scheduler `config`; ValueError in one line for what
    HeliosPipeline does not run (several stages: the pyramid pipeline's)."""
    stages = int(config.get("stages", 3))  # diffusers' default: the pyramid's 3
    if stages != 1:
        raise ValueError(f"the folder's HeliosScheduler has {stages} stages (the "
                         "pyramid pipeline's), which is not run here; use Helios-Base's")
    kind = config.get("scheduler_type", "unipc")
    if kind == "euler":
        return _HeliosEuler()
    if kind != "unipc":
        raise ValueError(f"HeliosScheduler type {kind!r} is not run here; use 'unipc' or "
                         "'euler'")
    if config.get("prediction_type", "flow_prediction") != "flow_prediction":
        raise ValueError("a Helios scheduler predicting anything but the flow is not run here")
    return HeliosUniPC(solver_order=int(config.get("solver_order", 2)),
                       solver_type=config.get("solver_type", "bh2"),
                       lower_order_final=bool(config.get("lower_order_final", True)),
                       disable_corrector=tuple(config.get("disable_corrector") or ()))
