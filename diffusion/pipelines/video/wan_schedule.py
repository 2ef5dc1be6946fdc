"""Wan's schedules: the scheduler a sampler names (the folder's own, or UniPC / flow-match Euler
on flow sigmas with the folder's shift), and video-to-video's cut of it by the denoising
strength (diffusers: `WanVideoToVideoPipeline.get_timesteps`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...sampling.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ...sampling.schedulers.unipc_flow import FlowUniPCMultistepScheduler, is_flow_unipc

__all__ = ["SAMPLERS", "check_strength", "strength_timesteps", "wan_scheduler"]

SAMPLERS = ("diffusers", "UniPC", "Euler")
""""diffusers": the folder's own scheduler; "UniPC" and "Euler": those on flow sigmas with
the folder's shift."""


def wan_scheduler(config: dict[str, Any], sampler: str) -> Any:
    """The scheduler `sampler` names (SAMPLERS), configured from the folder's `config`."""
    if sampler == "diffusers":
        if is_flow_unipc(config):
            return FlowUniPCMultistepScheduler.from_config(config)
        if config.get("_class_name") == "FlowMatchEulerDiscreteScheduler":
            return FlowMatchEulerDiscreteScheduler.from_config(config)
        raise ValueError(f"the folder's scheduler {config.get('_class_name')!r} is not one "
                         "Wan runs here; choose --sampler UniPC or Euler")
    shift = float(config.get("flow_shift", config.get("shift", 1.0)))
    if sampler == "UniPC":
        return FlowUniPCMultistepScheduler(flow_shift=shift)
    if sampler == "Euler":
        return FlowMatchEulerDiscreteScheduler(shift=shift)
    raise ValueError(f"sampler {sampler!r} is not one Wan runs; choose one of "
                     f"{', '.join(SAMPLERS)}")


def check_strength(strength: float, steps: int,
                   names: tuple[str, str] = ("the denoising strength", "the steps")) -> None:
    """ValueError in one line unless `strength` is in (0, 1] and leaves at least one of
    `steps` steps (int(steps x strength), as diffusers counts them); `names`: the two
    settings as the caller's user gives them ("--denoising-strength", "--steps")."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) \
            or not math.isfinite(strength) or not 0 < strength <= 1:
        raise ValueError(f"{names[0]} must be a number above 0, at most 1, got {strength!r}")
    if int(steps * strength) < 1:
        raise ValueError(f"{names[0]} {strength:g} leaves none of {steps} steps to run "
                         f"(int(steps x strength)); raise it, or {names[1]} to at least "
                         f"{math.ceil(1 / strength)}")


def strength_timesteps(timesteps: np.ndarray, steps: int, strength: float,
                       order: int = 1) -> np.ndarray:
    """The last int(steps x strength) of the schedule's `steps` steps (`order` timesteps a
    step): the video-to-video run starts where a denoising `strength` of noise is left.
    diffusers: `get_timesteps(num_inference_steps, timesteps, strength)`."""
    kept = min(int(steps * strength), steps)
    return timesteps[max(steps - kept, 0) * order:]
