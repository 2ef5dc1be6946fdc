"""CogView4-6B-Control (diffusers' `CogView4ControlPipeline`): a CogView4 transformer whose
input is twice its output (in_channels 32), the control map's VAE latents concatenated to the
noise latents' channels at every call, as FLUX.1 Canny / Depth dev read theirs. The map comes
as FLUX.1 Canny / Depth dev's does: `control_image=` in Python, `--control-image` without a
ControlNet on the command line, a ControlNet unit whose model is "None" on the server.

    latents = encode_control(pipe.vae, edges, batch=1, height=1024, width=1024)
    flow, shape, mu = pipe.velocity(["a bird"], height=1024, width=1024,
                                    control_latents=latents)

diffusers encodes the map by a draw from the VAE's posterior with torch's global generator
(`vae.encode(image).latent_dist.sample()`, no generator passed), scaled and not shifted (its
`vae_shift_factor = 0`). The "diffusers" sampler draws it from a generator of the run's seed:
diffusers' picture after `torch.manual_seed(seed)`; the WebUI samplers take the posterior's
mean, as they take FLUX.1 Canny / Depth dev's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ...models.step_cache import StepCache
from ...preprocessors.resize import fit_map
from ..control_map import split_maps
from ..observer import Observer
from ..request import GenerationRequest
from .flow_control import encode_map

__all__ = ["CogView4ControlPasses", "check_control", "control_channels", "encode_control"]


def control_channels(config: Mapping[str, Any]) -> int:
    """The input channels that take the control map's latents: CogView4-6B-Control's 16
    (in_channels 32, out_channels 16), 0 for CogView4-6B."""
    return int(config["in_channels"] - (config.get("out_channels") or config["in_channels"]))


def check_control(config: Mapping[str, Any], given: bool) -> None:
    """ValueError in one line where the control model's map is missing, or a map is given to
    a model that takes none."""
    if given and not control_channels(config):
        raise ValueError("this CogView4 model takes no control image in its input "
                         "(CogView4-6B-Control does): leave the control image out")
    if control_channels(config) and not given:
        raise ValueError("CogView4-6B-Control needs its control image (the canny or depth "
                         "map it follows): pass control_image= (the CLI: --control-image; "
                         "the server: a ControlNet unit with model None)")


def encode_control(vae: Any, image: Any, *, batch: int, height: int, width: int,
                   generator: Any = None, resize_mode: str = "Crop and Resize") -> np.ndarray:
    """The map (uint8 HxWx3, fitted to width x height by `resize_mode`) as float32 latents
    (batch, C, height/8, width/8): a posterior draw from `generator` (its mean where None),
    times the VAE's scaling factor. diffusers: `CogView4ControlPipeline`'s
    `vae.encode(image).latent_dist.sample() * vae.config.scaling_factor`."""
    return encode_map(vae, image, batch=batch, width=width, height=height,
                      resize_mode=resize_mode, generator=generator, shifted=False)


class CogView4ControlPasses:
    """The denoising passes of a CogView4 model with the request's control map (a
    `control_map.ControlMap` among its units) handed to the pipeline: fitted to the picture
    for the "diffusers" sampler (the pipeline draws its latents), encoded by the posterior's
    mean for the WebUI samplers and the hires pass."""

    pipe: Any
    _guidance: Callable[[GenerationRequest], dict[str, Any]]  # the family model's

    def _diffusers(self, request: GenerationRequest, prompts: list[str], seed: int,
                   width: int, height: int, observer: Observer,
                   cache: StepCache | None = None) -> np.ndarray:
        """The pipeline's own loop (CogView4ControlPipeline's with a map), from the init
        image (and mask) where one is given."""
        images: dict[str, Any] = {} if request.init_image is None else {
            "image": request.init_image, "mask_image": request.mask,
            "strength": float(request.strength)}
        found = split_maps(request.control or ())[0]
        if found is not None:
            images["control_image"] = fit_map(found.image, width, height, found.resize_mode)
        return self.pipe(prompts, height=height, width=width,  # type: ignore[no-any-return]
                         num_inference_steps=int(request.steps), seed=seed, rng=request.rng,
                         callback=observer.step, output_type="latent", cache=cache,
                         **self._guidance(request), **images)

    def guided_flow(self, request: GenerationRequest, prompts: list[str], width: int,
                    height: int, cache: StepCache | None = None) -> Any:
        """The pipeline's guided flow of `prompts` at width x height with the map's latents
        (the posterior's mean), its latents' shape and mu."""
        found = split_maps(request.control or ())[0]
        extra = {} if found is None else {"control_latents": encode_control(
            self.pipe.vae, found.image, batch=len(prompts), height=height, width=width,
            resize_mode=found.resize_mode)}
        return self.pipe.velocity(prompts, height=height, width=width, cache=cache,
                                  **self._guidance(request), **extra)
