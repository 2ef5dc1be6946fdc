"""Diffusion schedulers (samplers) on numpy float64, matching diffusers step for step.

Why both this package and `diffusion.sampling.samplers`: samplers/ holds the WebUI's k-diffusion
samplers, which reproduce the WebUI's images; schedulers/ holds diffusers' schedulers, which
run the model folder's own scheduler (`--sampler diffusers`) so parity with diffusers can
always be shown, and the WebUI's timestep samplers (DDIM, PLMS, UniPC).

One module per algorithm, each with diffusers' members: `timesteps`, `set_timesteps(n)`,
`step(model_output, t, sample, *, noise=None, generator=None) -> prev_sample`,
`init_noise_sigma`, `scale_model_input(sample, t)` and `add_noise(original, noise, t)`.
Configs are diffusers' `scheduler_config.json` dicts (`Scheduler.from_config`).

The denoising loop::

    scheduler = get_scheduler("DPM++ 2M Karras", model_scheduler_config)
    scheduler.set_timesteps(25)
    x = rng.standard_normal(shape) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = unet(scheduler.scale_model_input(x, t), t, text)
        x = scheduler.step(eps, t, x, generator=rng)
"""

from ._base import Scheduler
from ._registry import SAMPLERS, SCHEDULERS, get_scheduler, sampler_name, scheduler_from_config
from .ddim import DDIMScheduler
from .ddpm import DDPMScheduler
from .dpm_solver import DPMSolverMultistepScheduler
from .euler import EulerDiscreteScheduler
from .euler_ancestral import EulerAncestralDiscreteScheduler
from .flow_match_euler import FlowMatchEulerDiscreteScheduler
from .heun import HeunDiscreteScheduler
from .lcm import LCMScheduler
from .lms import LMSDiscreteScheduler
from .pndm import PNDMScheduler
from .unipc import UniPCMultistepScheduler

__all__ = [
    "SAMPLERS",
    "SCHEDULERS",
    "DDIMScheduler",
    "DDPMScheduler",
    "DPMSolverMultistepScheduler",
    "EulerAncestralDiscreteScheduler",
    "EulerDiscreteScheduler",
    "FlowMatchEulerDiscreteScheduler",
    "HeunDiscreteScheduler",
    "LCMScheduler",
    "LMSDiscreteScheduler",
    "PNDMScheduler",
    "Scheduler",
    "UniPCMultistepScheduler",
    "get_scheduler",
    "sampler_name",
    "scheduler_from_config",
]
