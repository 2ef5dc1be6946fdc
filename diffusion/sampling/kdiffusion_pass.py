"""One k-diffusion pass, written once for every model family (UNet and flow models alike):

1. each image's noise from its own seed (`WebUISeeds`: image k seed + k, variation seeds,
   the eta noise seed delta), laid over the init latents at sigmas[0] by the model's sampling
   (`noise_scaling`: init + sigma noise for UNets, sigma noise + (1 - sigma) init for flow
   models);
2. the plan's sampler on the family's denoiser (`CFGDenoiser`, `FlowDenoiser`), its step noise
   from the same generators or Brownian trees of the seeds;
3. inpainting: the kept region is the init image's (the WebUI's `Img2Img.sample`).

    latents = sample_pass(plan, model_sampling, denoiser, seeds, rng=rng, shape=(C, h, w),
                          init_latent=init, keep=keep, options=options, callback=observer.step)
    fields = sampler_fields(plan.info, options, seeds)   # the infotext's ENSD and settings
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..noise.image_noise import ImageNoise
from .kdiffusion import SamplerOptions, SamplingPlan, kept, sample
from .model_sampling import ModelSampling
from .samplers.registry import SamplerInfo

__all__ = ["WebUISeeds", "sample_pass", "sampler_fields"]


@dataclass(frozen=True)
class WebUISeeds:
    """A batch's seeds as the WebUI gives them: image k has seed + k (all the same seed when a
    variation seed varies them), variation seed subseed + k, and the eta noise seed delta."""

    seeds: list[int]
    subseeds: list[int]
    subseed_strength: float
    eta_noise_seed_delta: int
    resize_from: tuple[int, int] | None = None  # latent (height, width) of "Seed resize from"

    @classmethod
    def webui(cls, seed: int, batch: int, subseed: int, subseed_strength: float,
              eta_noise_seed_delta: int, resize_from: tuple[int, int] | None = None
              ) -> WebUISeeds:
        varied = subseed_strength != 0
        return cls([seed + (0 if varied else k) for k in range(batch)],
                   [int(subseed) + k for k in range(batch)], float(subseed_strength),
                   int(eta_noise_seed_delta), resize_from)

    def noise(self, rng: str, shape: tuple[int, int, int], *,
              first_pass: bool = True) -> ImageNoise:
        """Fresh generators for one pass over latents of `shape` (C, H, W); seed resize
        applies to the first pass only (the hires pass draws at its own size)."""
        return ImageNoise(rng, self.seeds, shape, subseeds=self.subseeds,
                          subseed_strength=self.subseed_strength,
                          eta_noise_seed_delta=self.eta_noise_seed_delta,
                          resize_from=self.resize_from if first_pass else None)

    def fields(self, uses_ensd: bool) -> dict[str, Any]:
        """Settings for the infotext: variation seeds when used, ENSD where it matters."""
        fields: dict[str, Any] = {}
        if self.subseed_strength:
            fields.update(subseed=self.subseeds[0], subseeds=self.subseeds,
                          subseed_strength=self.subseed_strength)
        if self.eta_noise_seed_delta and uses_ensd:
            fields["ensd"] = self.eta_noise_seed_delta
        return fields


def sampler_fields(info: SamplerInfo, options: SamplerOptions,
                   seeds: WebUISeeds) -> dict[str, Any]:
    """The infotext fields of a k-diffusion run: variation seeds when used, ENSD where the
    sampler `info` depends on it, and the sampler settings that applied and are not the
    defaults (`sampler_fields`)."""
    return {**seeds.fields(info.uses_ensd), "sampler_fields": options.infotext(info)}


def sample_pass(plan: SamplingPlan, model_sampling: ModelSampling,
                model: Callable[[np.ndarray, float], np.ndarray], seeds: WebUISeeds, *,
                rng: str, shape: tuple[int, int, int], options: SamplerOptions,
                init_latent: np.ndarray | None = None, keep: np.ndarray | None = None,
                callback: Callable[[int, int, np.ndarray], bool | None] | None = None,
                denoised: Callable[[np.ndarray], None] | None = None,
                first_pass: bool = True, noise_multiplier: float = 1.0) -> np.ndarray:
    """The latents (B, C, h, w) float64 after `plan`'s sampler ran on `model` (the family's
    denoiser: x0 at a sigma) from pure noise, or from `init_latent` (B, C, h, w) noised to
    sigmas[0] (img2img); `keep` (1 where the init image stays: inpainting) pins the result
    there. `shape`: one image's latents (C, h, w); `first_pass`: whether seed resize applies
    (not in a hires pass). `callback(done, total, latents)` after each step (False stops);
    `denoised(x0)` after each call of `model`, with its prediction (the live previews');
    `noise_multiplier`: the start's noise times this (the WebUI's initial_noise_multiplier,
    img2img's; the step noise stays as drawn)."""
    # 1. each image's noise from its own seed; the start at sigmas[0]
    noise = seeds.noise(rng, shape, first_pass=first_pass)
    start = noise.first()
    if noise_multiplier != 1.0:
        start = start * noise_multiplier
    x = model_sampling.noise_scaling(plan.sigmas[0], start, init_latent)
    # 2. the sampler's loop on the denoiser
    total = len(plan.sigmas) - 1

    def step(i: int, latents: np.ndarray) -> bool | None:
        return None if callback is None else callback(i + 1, total, latents)

    if denoised is not None:
        model = _Reporting(model, denoised)
    x = sample(plan, model, x, seeds=seeds.seeds, image_noise=noise,
               model_sampling=model_sampling, callback=step, options=options.kwargs(plan.info))
    # 3. inpaint: the kept region is the init image's
    return kept(x, keep, init_latent)


class _Reporting:
    """`model`, telling `denoised` each prediction it makes; the unconditional x0 the CFG++
    samplers read (`uncond`) stays the model's."""

    def __init__(self, model: Callable[..., np.ndarray],
                 denoised: Callable[[np.ndarray], None]) -> None:
        self.model, self.denoised = model, denoised

    @property
    def uncond(self) -> np.ndarray | None:
        return getattr(self.model, "uncond", None)

    def __call__(self, x: np.ndarray, sigma: Any, **kwargs: Any) -> np.ndarray:
        x0 = self.model(x, sigma, **kwargs)
        self.denoised(x0)
        return x0
