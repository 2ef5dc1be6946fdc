"""Stable Diffusion WebUI sampler names -> their closest diffusers scheduler + config overrides.

These are diffusers' equivalents, not the WebUI's algorithms: the pipeline runs the WebUI's
samplers through `diffusion.sampling.samplers` (k-diffusion) and uses this table only for the
WebUI's timestep samplers DDIM, PLMS and UniPC. It stays for Python users who want a diffusers-style
scheduler by a familiar name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._base import Scheduler
from .ddim import DDIMScheduler
from .ddpm import DDPMScheduler
from .dpm_solver import DPMSolverMultistepScheduler
from .euler import EulerDiscreteScheduler
from .euler_ancestral import EulerAncestralDiscreteScheduler
from .heun import HeunDiscreteScheduler
from .lcm import LCMScheduler
from .lms import LMSDiscreteScheduler
from .pndm import PNDMScheduler
from .unipc import UniPCMultistepScheduler

__all__ = ["SAMPLERS", "SCHEDULERS", "get_scheduler", "sampler_name", "scheduler_from_config"]

# diffusers class name (a config's "_class_name") -> our class of the same name
SCHEDULERS: dict[str, type[Scheduler]] = {cls.__name__: cls for cls in (
    DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
    EulerAncestralDiscreteScheduler, HeunDiscreteScheduler, LCMScheduler, LMSDiscreteScheduler,
    PNDMScheduler, UniPCMultistepScheduler)}

# The mapping diffusers' documentation gives for the A1111 WebUI names.
SAMPLERS: dict[str, tuple[type[Scheduler], dict[str, Any]]] = {
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "Euler": (EulerDiscreteScheduler, {}),
    "DDIM": (DDIMScheduler, {}),
    "PLMS": (PNDMScheduler, {"skip_prk_steps": True}),
    "LMS": (LMSDiscreteScheduler, {}),
    "Heun": (HeunDiscreteScheduler, {}),
    "DPM++ 2M": (DPMSolverMultistepScheduler,
                 {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "DPM++ 2M Karras": (DPMSolverMultistepScheduler,
                        {"algorithm_type": "dpmsolver++", "solver_order": 2,
                         "use_karras_sigmas": True}),
    "DPM++ 2M SDE": (DPMSolverMultistepScheduler,
                     {"algorithm_type": "sde-dpmsolver++", "solver_order": 2,
                      "use_karras_sigmas": False}),
    "UniPC": (UniPCMultistepScheduler, {}),
    "LCM": (LCMScheduler, {}),
    "DDPM": (DDPMScheduler, {}),
}


def sampler_name(name: str) -> str:
    """The WebUI's spelling of sampler `name` (case and surrounding spaces do not matter);
    ValueError listing the valid names when there is none."""
    by_lower = {key.lower(): key for key in SAMPLERS}
    key = by_lower.get(name.strip().lower()) if isinstance(name, str) else None
    if key is None:
        raise ValueError(f"unknown sampler {name!r}; valid names: {', '.join(SAMPLERS)}")
    return key


def get_scheduler(name: str, config: Mapping[str, Any] | None = None,
                  **overrides: Any) -> Scheduler:
    """The scheduler for WebUI sampler `name` ("Euler a", "DPM++ 2M Karras", ...; case does not
    matter), configured from a model's `scheduler_config.json` dict (`config`) like diffusers'
    `SchedulerClass.from_config(pipe.scheduler.config)`; the sampler's own settings and then
    `overrides` take precedence. Raises ValueError listing the valid names.
    """
    cls, settings = SAMPLERS[sampler_name(name)]
    return cls.from_config(config, **settings, **overrides)


def scheduler_from_config(config: Mapping[str, Any]) -> Scheduler:
    """The scheduler a model folder ships: the class named by `config["_class_name"]`."""
    name = config.get("_class_name")
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler class {name!r} is not supported; supported: "
                         f"{', '.join(sorted(SCHEDULERS))} (or pick one with get_scheduler)")
    return SCHEDULERS[name].from_config(config)
