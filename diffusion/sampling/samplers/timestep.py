"""The WebUI's timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC) by name: they step through
the model's discrete timesteps rather than a sigma schedule, so `diffusion.sampling.schedulers` runs
them (diffusers' DDIMScheduler, PNDMScheduler, UniPCMultistepScheduler) and this module only
lists them beside the k-diffusion samplers (WebUI: `modules/sd_samplers_timesteps.py`)."""

from __future__ import annotations

from .registry import register_timestep

register_timestep("DDIM", "ddim")
register_timestep("DDIM CFG++", None, ("ddim_cfgpp",), needs_uncond=True)
register_timestep("PLMS", None, ("plms",))
register_timestep("UniPC", "uni_pc", ("unipc",))
