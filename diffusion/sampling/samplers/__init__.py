"""k-diffusion-style samplers on numpy float64: the algorithms the WebUI and ComfyUI run.

Every sampler has one call shape::

    x = sample_euler(model, x, sigmas, *, noise=None, callback=None, **options)

- `model(x, sigma) -> denoised`: the x0 prediction at noise level sigma, classifier-free
  guidance already applied (a `Denoise`).
- `x`: the starting latent, already scaled to `sigmas[0]` (x = unit noise * sigmas[0]).
- `sigmas`: 1-D, descending, ending with 0 (k-diffusion's convention).
- `noise(sigma, sigma_next) -> N(0, 1)` of x's shape (a `NoiseSampler`): the source of every
  random draw, in the order k-diffusion draws them (the WebUI's per-image generator, or a
  Brownian tree for the SDE samplers). Samplers that draw noise with their settings raise
  ValueError when it is None; deterministic ones never call it.
- `callback(i, x)` after step i with the new x; returning False stops early (the current x is
  returned).

CFG++ protocol. The CFG++ samplers (registry `needs_uncond=True`: Euler CFG++, Euler a CFG++,
DPM++ 2M CFG++, DPM++ 2S a CFG++, Res Multistep CFG++) also need the unconditional x0: the model
object must have an attribute `uncond` that each call sets to the unconditional denoised
prediction of that call (the array the guidance started from). Samplers read it right after
calling the model; a model without it gives a ValueError.

`registry.lookup(name)` finds a sampler by its WebUI label, ComfyUI name or alias, with the
options the WebUI runs it with; `registry.resolve("DPM++ 2M Karras")` splits old combined names.
`schedules.sigmas(type, n, ...)` gives the sigmas of the WebUI's schedule types
(`SCHEDULE_TYPES`; their labels `SCHEDULE_LABELS`).

Layout: one module per algorithm family (`euler`, `heun`, `dpmpp_2m`, ...), each registering
its samplers with `registry.register`; `timestep` lists the WebUI's timestep samplers, which
`diffusion.sampling.schedulers` runs; `schedules` (over the model's discrete sigmas,
`diffusion.sampling.model_sampling`) and `brownian` (Brownian-tree noise) are what the samplers
are given. A new sampler is one module plus its import below.
"""

from . import timestep as timestep  # lists DDIM, DDIM CFG++, PLMS and UniPC
from ._common import Callback, Denoise, NoiseSampler, Sampler, ancestral_step, to_d
from .cfg_pp import (
    sample_dpmpp_2m_cfg_pp,
    sample_dpmpp_2s_ancestral_cfg_pp,
    sample_euler_ancestral_cfg_pp,
    sample_euler_cfg_pp,
)
from .ddpm import sample_ddpm
from .deis import sample_deis
from .dpm2 import sample_dpm_2, sample_dpm_2_ancestral
from .dpm_fast import sample_dpm_adaptive, sample_dpm_fast
from .dpmpp_2m import sample_dpmpp_2m
from .dpmpp_2m_sde import sample_dpmpp_2m_sde, sample_dpmpp_2m_sde_heun
from .dpmpp_2s import sample_dpmpp_2s_ancestral
from .dpmpp_3m_sde import sample_dpmpp_3m_sde
from .dpmpp_sde import sample_dpmpp_sde
from .euler import sample_euler, sample_euler_ancestral, sample_euler_ancestral_rf
from .heun import sample_heun, sample_heunpp2
from .ipndm import sample_ipndm, sample_ipndm_v
from .lcm import sample_lcm
from .lms import sample_lms
from .registry import SAMPLERS, SamplerInfo, lookup, register, resolve
from .res_multistep import (
    sample_res_multistep,
    sample_res_multistep_ancestral,
    sample_res_multistep_ancestral_cfg_pp,
    sample_res_multistep_cfg_pp,
)
from .restart import sample_restart
from .sa_solver import sample_sa_solver, sample_sa_solver_pece
from .schedules import SCHEDULE_LABELS, SCHEDULE_TYPES

__all__ = [
    "SAMPLERS",
    "SCHEDULE_LABELS",
    "SCHEDULE_TYPES",
    "Callback",
    "Denoise",
    "NoiseSampler",
    "Sampler",
    "SamplerInfo",
    "ancestral_step",
    "lookup",
    "register",
    "resolve",
    "sample_ddpm",
    "sample_deis",
    "sample_dpm_2",
    "sample_dpm_2_ancestral",
    "sample_dpm_adaptive",
    "sample_dpm_fast",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_cfg_pp",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_2m_sde_heun",
    "sample_dpmpp_2s_ancestral",
    "sample_dpmpp_2s_ancestral_cfg_pp",
    "sample_dpmpp_3m_sde",
    "sample_dpmpp_sde",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_euler_ancestral_cfg_pp",
    "sample_euler_ancestral_rf",
    "sample_euler_cfg_pp",
    "sample_heun",
    "sample_heunpp2",
    "sample_ipndm",
    "sample_ipndm_v",
    "sample_lcm",
    "sample_lms",
    "sample_res_multistep",
    "sample_res_multistep_ancestral",
    "sample_res_multistep_ancestral_cfg_pp",
    "sample_res_multistep_cfg_pp",
    "sample_restart",
    "sample_sa_solver",
    "sample_sa_solver_pece",
    "to_d",
]
