"""The WebUI's k-diffusion sampling: guidance, sigmas, noise, img2img and inpaint.

What the WebUI does for a k-diffusion sampler (`modules/sd_samplers_kdiffusion.py`,
`sd_samplers_cfg_denoiser.py`), step for step:

1. sigmas: the schedule type (Automatic = the sampler's default, else the model's own uniform
   timesteps) over `steps` (+1 and the penultimate dropped for DPM2 / DPM2 a / DPM++ 3M SDE);
   img2img keeps the last `int(min(strength, 0.999) * steps) + 1` of them.
2. x = noise * sigmas[0] (txt2img), or init_latent + noise * sigmas[0] (img2img): the
   model sampling's `noise_scaling` in the one pass, `diffusion.sampling.kdiffusion_pass`.
3. the sampler calls the guided denoiser: the UNet sees x * c_in at timestep sigma_to_t(sigma),
   its output becomes x0 (epsilon or v-prediction), and x0 = uncond + scale * (cond - uncond);
   with composable diffusion (a prompt's `AND` parts) one cond row per part, and
   x0 = uncond + sum(weight * scale * (cond_part - uncond)) (`combine`).
   Inpainting (with any UNet, the 9-channel one too, as the WebUI's) keeps the unmasked
   latents at every call, and once more at the end.
4. noise: the per-image generators (`diffusion.noise.image_noise.ImageNoise`), or for the SDE
   samplers one Brownian tree per image seed (`diffusion.sampling.samplers.brownian`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..noise.image_noise import ImageNoise
from .guidance import Weights, combine, part_rows
from .model_sampling import DiscreteSchedule, FlowSchedule, ModelSampling
from .samplers import registry, schedules
from .samplers.brownian import BrownianTreeNoise

__all__ = ["DIFFUSERS", "CFGDenoiser", "FlowDenoiser", "GuidedModel", "SamplerOptions",
           "SamplingPlan", "kept", "plan", "sample", "sampler_label", "sampler_names",
           "schedule_tail"]

DIFFUSERS = "diffusers"  # the sampler name that runs the model folder's own scheduler


class GuidedModel(Protocol):
    """A model's unconditional and conditional outputs for one input (the UNet family's
    `GuidedUNet`): `(uncond or None, cond) = model(model_in, t, step)`, cond with a row per
    AND part of each image's prompt under `weights`."""

    weights: Weights | None

    def __call__(self, model_in: np.ndarray, t: float, step: int
                 ) -> tuple[np.ndarray | None, np.ndarray]: ...


def sampler_label(name: str) -> str:
    """`name` as the WebUI spells it: a sampler label ("dpmpp_2m" -> "DPM++ 2M"), an old
    combined name with its schedule type ("dpm++ 2m karras" -> "DPM++ 2M Karras"), or
    "diffusers". ValueError listing the valid names for anything else."""
    if isinstance(name, str) and name.strip().lower() == DIFFUSERS:
        return DIFFUSERS
    label, schedule = registry.resolve(name)
    return label if schedule == "Automatic" else f"{label} {schedule}"


def sampler_names() -> list[str]:
    """Every sampler's label, the WebUI's first, then "diffusers"."""
    return [info.name for info in registry.SAMPLERS] + [DIFFUSERS]


@dataclass(frozen=True)
class SamplerOptions:
    """The WebUI's sampler settings: `eta` for the samplers that take one (its "Eta for
    ancestral samplers", 1), and Karras' churn for Euler, Heun and DPM2 (`s_churn` 0,
    `s_tmin` 0, `s_tmax` inf) and noise scale `s_noise` (1)."""

    eta: float = 1.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0

    def __post_init__(self) -> None:
        for name in ("eta", "s_churn", "s_tmin", "s_noise"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not self.s_tmax > self.s_tmin:
            raise ValueError(f"s_tmax ({self.s_tmax}) must be above s_tmin ({self.s_tmin})")

    def kwargs(self, info: registry.SamplerInfo) -> dict[str, float]:
        """The settings `info`'s sampler takes (the WebUI passes only those)."""
        taken = inspect.signature(info.function).parameters if info.function else {}
        return {name: getattr(self, name) for name in _OPTION_FIELDS if name in taken}

    def infotext(self, info: registry.SamplerInfo) -> dict[str, float]:
        """The infotext fields of the settings that apply and are not the defaults."""
        used = self.kwargs(info)
        default = SamplerOptions()
        return {_OPTION_FIELDS[name]: value for name, value in used.items()
                if value != getattr(default, name)}


# option -> the WebUI's infotext field
_OPTION_FIELDS = {"eta": "Eta", "s_churn": "Sigma churn", "s_tmin": "Sigma tmin",
                  "s_tmax": "Sigma tmax", "s_noise": "Sigma noise"}


@dataclass(frozen=True)
class SamplingPlan:
    """Which sampler runs with which sigmas: the WebUI's `get_sigmas` decisions, resolved."""

    info: registry.SamplerInfo
    schedule_label: str  # the infotext's "Schedule type": the resolved type, or "Automatic"
    sigmas: np.ndarray  # descending to 0; the part that runs (img2img drops the first ones)
    img2img: bool


def plan(sampler: str, scheduler: str, steps: int, discrete: DiscreteSchedule, *,
         strength: float | None = None, t_enc: int | None = None,
         is_sdxl: bool = False) -> SamplingPlan:
    """The sigmas the WebUI runs for `sampler` with schedule type `scheduler` over `steps`.
    img2img runs only the last t_enc + 1 of them: t_enc = `int(min(strength, 0.999) * steps)`,
    or `t_enc` as given (the hires pass: its steps - 1 of a schedule stretched by 1 / strength).

    "Automatic" is the sampler's own schedule type; a sampler without one (the registry says
    "Uniform") takes the model's evenly spaced timesteps and the infotext keeps "Automatic",
    as the WebUI's does."""
    info = registry.lookup(sampler)
    kind = schedules.lookup(scheduler)
    label = kind.label
    if kind.name == "automatic":
        kind = schedules.lookup(info.default_schedule or "uniform")
        if kind.name != "uniform":
            label = kind.label
    sigmas = schedules.sigmas(kind.name, steps, discrete, is_sdxl=is_sdxl,
                              discard_next_to_last_sigma=info.discard_next_to_last_sigma)
    sigmas = schedule_tail(sigmas, steps, strength=strength, t_enc=t_enc)
    return SamplingPlan(info=info, schedule_label=label, sigmas=np.asarray(sigmas, np.float64),
                        img2img=strength is not None or t_enc is not None)


def schedule_tail(sigmas: np.ndarray, steps: int, *, strength: float | None = None,
                  t_enc: int | None = None) -> np.ndarray:
    """The part of a schedule of `steps` steps that img2img runs, its last t_enc + 1 sigmas:
    t_enc = `int(min(strength, 0.999) * steps)`, or `t_enc` as given; all of it without
    either (txt2img)."""
    if strength is not None:
        t_enc = int(min(strength, 0.999) * steps)
    return sigmas if t_enc is None else sigmas[steps - t_enc - 1:]


class CFGDenoiser:
    """model(x, sigma) -> the guided x0, as the WebUI's CFGDenoiser: the samplers' `model`.

    The UNet sees x * c_in at timestep sigma_to_t(sigma); its outputs become x0 predictions and
    x0 = uncond + cfg_scale * (cond - uncond), or with the UNet's `weights` the composable
    guidance of `combine`. `extra` (B, C, H, W) is concatenated to the UNet
    input (the 9-channel inpainting UNet's mask and masked image). `keep` / `init_latent`:
    where keep is 1 the result is pinned to init_latent (inpainting, with either kind of UNet).
    After each call `uncond` holds the unconditional x0 (CFG++), and `step` counts the calls
    (the WebUI's step for prompt editing)."""

    def __init__(self, unet: GuidedModel, discrete: DiscreteSchedule, cfg_scale: float, *,
                 extra: np.ndarray | None = None, keep: np.ndarray | None = None,
                 init_latent: np.ndarray | None = None) -> None:
        self.unet = unet
        self.discrete = discrete
        self.cfg_scale = float(cfg_scale)
        self.extra = extra
        self.keep = keep
        self.init_latent = init_latent
        self.step = 0
        self.uncond: np.ndarray | None = None

    def __call__(self, x: np.ndarray, sigma: float) -> np.ndarray:
        _, _, c_in = self.discrete.scalings(sigma)
        model_in = x * c_in
        if self.extra is not None:
            model_in = np.concatenate([model_in, self.extra], axis=1)
        out_uncond, out_cond = self.unet(model_in, float(self.discrete.sigma_to_t(sigma)),
                                         self.step)
        weights = self.unet.weights
        cond = self.discrete.denoised(part_rows(x, weights), sigma, out_cond)
        if out_uncond is None:
            self.uncond = denoised = cond
        else:
            self.uncond = self.discrete.denoised(x, sigma, out_uncond)
            denoised = combine(self.uncond, cond, weights, self.cfg_scale)
        if self.keep is not None:
            denoised = kept(denoised, self.keep, self.init_latent)
        self.step += 1
        return denoised


class FlowDenoiser:
    """model(x, sigma) -> the x0 of a flow-matching model (FLUX, SD3), as ComfyUI's CONST
    model sampling: x - sigma * flow(x, 1000 sigma) (`flow_schedule`'s conversions), the flow
    given float32 latents and its guidance (true CFG, SD3's CFG) inside it. `keep` /
    `init_latent`: as CFGDenoiser's."""

    def __init__(self, flow: Callable[[np.ndarray, float], np.ndarray],
                 flow_schedule: FlowSchedule, *, keep: np.ndarray | None = None,
                 init_latent: np.ndarray | None = None) -> None:
        self.flow = flow
        self.flow_schedule = flow_schedule
        self.keep = None if init_latent is None else keep
        self.init_latent = init_latent

    def __call__(self, x: np.ndarray, sigma: float) -> np.ndarray:
        schedule = self.flow_schedule
        velocity = self.flow(x.astype(np.float32), schedule.sigma_to_t(sigma)).astype(np.float64)
        denoised = schedule.denoised(x, sigma, velocity)
        if self.keep is not None:
            denoised = kept(denoised, self.keep, self.init_latent)
        return denoised


def kept(x: np.ndarray, keep: np.ndarray | None, init_latent: Any) -> np.ndarray:
    """x with the init latents where `keep` is 1 (inpainting: the WebUI's latent mask
    inverted, blended at every model call and once more at the end); x without `keep`."""
    return x if keep is None else init_latent * keep + (1 - keep) * x


def _no_noise(sigma: float, sigma_next: float) -> np.ndarray:
    raise ValueError(f"no Brownian noise between equal sigmas ({sigma} to {sigma_next})")


def sample(plan_: SamplingPlan, model: Callable[[np.ndarray, float], np.ndarray],
           x: np.ndarray, *, seeds: Sequence[int], image_noise: ImageNoise,
           model_sampling: ModelSampling | None = None,
           callback: Callable[[int, np.ndarray], bool | None] | None = None,
           options: dict[str, Any] | None = None) -> np.ndarray:
    """Run `plan_`'s sampler from `x` (already at sigmas[0]) on `model` (a CFGDenoiser or
    a FlowDenoiser), as the WebUI launches it.

    The SDE samplers get one Brownian tree per image seed over the sigmas' range; the others
    draw from `image_noise`. In txt2img, DPM fast / adaptive step over the model's whole sigma
    range, as the WebUI passes it (in img2img, over the schedule's part that runs)."""
    info, sigmas = plan_.info, plan_.sigmas
    kwargs = {**info.options, **(options or {})}  # the user's settings win over the WebUI's
    if info.brownian_noise:
        positive = sigmas[sigmas > 0]
        low, high = float(positive.min()), float(sigmas.max())
        # one step, straight to sigma 0 (1 step, a hires pass of 1): the SDE samplers draw no
        # noise on a last step; k-diffusion builds its tree over the empty range all the same
        noise = (BrownianTreeNoise(x.shape, low, high, list(seeds))
                 if np.float32(low) != np.float32(high) else _no_noise)
    else:
        noise = image_noise.sampler
    if info.model_sigma_range and not plan_.img2img and model_sampling is not None:
        kwargs.setdefault("sigma_min", model_sampling.sigma_min)
        kwargs.setdefault("sigma_max", model_sampling.sigma_max)
    if info.function is None:
        raise ValueError(f"{info.name} is a timestep sampler: run it through "
                         "diffusion.sampling.schedulers, not k-diffusion sampling")
    return info.function(model, x, sigmas, noise=noise, callback=callback, **kwargs)
