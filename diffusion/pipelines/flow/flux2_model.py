"""`Flux2Model`: FLUX.2 klein behind the `generate(request)` every door calls, the flow
family's `FlowModel` with klein's guidance, latent space and decode, and the registry's
loader and defaults for it.

The request's CFG scale is diffusers' `guidance_scale`: 1 is no guidance (what the
step-distilled klein 4B/9B run at), above 1 a negative-prompt pass combined as `neg + cfg *
(pos - neg)` (the undistilled klein base models; a distilled folder ignores it, as diffusers
does). The "diffusers" sampler runs Flux2KleinPipeline's own loop; the WebUI's samplers for
flow models run over the Simple schedule shifted by klein's mu of the size and step count.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ...models.step_cache import StepCache
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..observer import Observer
from ..request import GenerationRequest
from .flow_model import FlowModel
from .flow_sampling import FLOW_SAMPLERS, FLOW_SCHEDULES

__all__ = ["FLUX2_BASE_DEFAULTS", "FLUX2_DEV_DEFAULTS", "FLUX2_KLEIN_DEFAULTS", "Flux2Model",
           "flux2_defaults", "load_flux2_model"]

# the klein 4B/9B cards: 4 steps at guidance 1 (step-distilled)
FLUX2_KLEIN_DEFAULTS = SamplingDefaults(
    steps=4, sampler="Euler", cfg_scale=1.0,
    why="diffusers' FLUX.2 klein settings; CFG 1 runs without a negative pass")
# the klein base models: Flux2KleinPipeline's own defaults, 50 steps at guidance 4
FLUX2_BASE_DEFAULTS = SamplingDefaults(steps=50, sampler="Euler", cfg_scale=4.0,
                                       why="diffusers' FLUX.2 klein settings")
# FLUX.2 dev: Flux2Pipeline's 50 steps; its guidance is embedded (the Distilled CFG Scale)
FLUX2_DEV_DEFAULTS = SamplingDefaults(
    steps=50, sampler="Euler", cfg_scale=1.0,
    why="diffusers' FLUX.2 dev settings; its guidance is the Distilled CFG Scale")


class Flux2Model(FlowModel):
    """A loaded FLUX.2 klein pipeline (`family` "flux2-klein", a `Flux2KleinPipeline` as
    `pipe`) or FLUX.2 dev one ("flux2-dev", a `Flux2Pipeline`: the request's
    `distilled_cfg_scale` is its embedded guidance, CFG stays 1)."""

    @property
    def dev(self) -> bool:
        return self.family == "flux2-dev"

    @property
    def latent_channels(self) -> int:
        """The transformer's channels: the VAE's 2x2 patches of its latent channels."""
        return int(self.pipe.transformer.config["in_channels"])

    @property
    def capabilities(self) -> Capabilities:
        """The WebUI samplers defined for flow models over the Simple schedule, CFG with a
        negative prompt (none for a distilled model), plain-text prompts with LoRA tags;
        First Block Cache (MagCache's and TeaCache's tables are FLUX's); txt2img only: no
        init image, hires fix, refiner, control units, variation seeds or memory modes yet."""
        return Capabilities(family=self.family, latent_space="flux2",
                            guidance="distilled" if self.dev else
                            "none" if self.pipe.distilled else "cfg",
                            samplers=tuple(FLOW_SAMPLERS), schedules=FLOW_SCHEDULES,
                            models="FLUX.2 klein models", step_cache=("fbc",),
                            prompt_syntax=False,
                            textual_inversion=False, refiner=False, control=False,
                            variation_seeds=False, latent_upscale_resize=False,
                            hires_with_diffusers=False, latent_masked_content=False,
                            memory_modes=False)

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """FlowModel's checks, and txt2img only."""
        super().check(request, width, height)
        if self.dev and request.cfg_scale != 1:
            raise ValueError("FLUX.2 dev runs without CFG (its guidance is embedded: set it with "
                             "the Distilled CFG Scale); set cfg_scale 1")
        if request.init_image is not None:
            raise ValueError("img2img and inpainting are not supported for FLUX.2 klein "
                             "models yet; leave out the init image")
        if request.hires is not None:
            raise ValueError("the hires fix is not supported for FLUX.2 klein models yet; "
                             "leave it out and ask for the size you want")

    def use_vae(self, path: str | os.PathLike[str]) -> None:
        raise ValueError("--vae is not supported for FLUX.2 klein models yet; the folder's "
                         "vae/ (FLUX.2's 32-channel VAE) decodes")

    def lora_targets(self) -> Any:
        """What the prompt's LoRAs patch: the transformer."""
        return SimpleNamespace(unet=self.pipe.transformer, transformer=self.pipe.transformer)

    def decode(self, latents: np.ndarray, request: GenerationRequest) -> list[np.ndarray]:
        """The pictures: the VAE's batch norm undone, unpatchified, decoded."""
        return [np.round(p * 255).astype(np.uint8) for p in self.pipe.decode(latents)]

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        length = ({} if self.max_sequence_length is None
                  else {"max_sequence_length": self.max_sequence_length})
        if self.dev:
            return {"guidance_scale": float(request.distilled_cfg_scale), **length}
        return {"guidance_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt, **length}

    def _diffusers(self, request: GenerationRequest, prompts: list[str], seed: int,
                   width: int, height: int, observer: Observer,
                   cache: StepCache | None = None) -> np.ndarray:
        return self.pipe(prompts, height=height, width=width,  # type: ignore[no-any-return]
                         num_inference_steps=int(request.steps), seed=seed, rng=request.rng,
                         callback=observer.step, output_type="latent", cache=cache,
                         **self._guidance(request))

    def guided_flow(self, request: GenerationRequest, prompts: list[str], width: int,
                    height: int, cache: StepCache | None = None
                    ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...],
                               float | None]:
        """The guided flow of `prompts` (CFG inside Flux2KleinPipeline.velocity), its
        latents' shape and the schedule's mu; `cache`: the generation's step cache (each
        pass a branch of it)."""
        return self.pipe.velocity(  # type: ignore[no-any-return]
            prompts, height=height, width=width, num_inference_steps=int(request.steps),
            cache=cache, **self._guidance(request))


def flux2_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a FLUX.2 klein model samples with where its defaults.json says nothing: the
    distilled cards' 4 steps at CFG 1 for a folder whose model_index.json says
    `is_distilled`, Flux2KleinPipeline's 50 steps at 4 else."""
    from ...loaders.flux2 import flux2_distilled

    if family == "flux2-dev":
        return FLUX2_DEV_DEFAULTS
    return FLUX2_KLEIN_DEFAULTS if flux2_distilled(path) else FLUX2_BASE_DEFAULTS


def load_flux2_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                     ) -> Flux2Model:
    """A FLUX.2 klein diffusers folder, or a single-file transformer with `options.base` (a
    FLUX.2 klein folder giving the text encoder, tokenizer, VAE and scheduler), as a
    Flux2Model; `options.text_encoders`: a Qwen3 text encoder file in place of the folder's;
    `options.defaults` (the folder's defaults.json) over `flux2_defaults`."""
    from .flux2 import Flux2KleinPipeline
    from .flux2_dev import Flux2Pipeline

    path, base = Path(path), options.base
    if path.is_file() and base is None:
        raise ValueError(f"{path.name} is a FLUX.2 klein transformer alone: give a FLUX.2 "
                         "klein diffusers folder with --base for its text encoder, tokenizer, "
                         "VAE and scheduler")
    if family == "flux2-dev" and options.text_encoders:
        raise ValueError("a text encoder file is not supported for FLUX.2 dev yet; leave out "
                         "--text-encoder (the folder's text_encoder/, Mistral Small 3.1, reads "
                         "the prompt)")
    if path.is_dir() and base is not None:
        raise ValueError("--base is for a single-file FLUX.2 klein transformer; a FLUX.2 "
                         "klein folder holds every part itself, leave --base out")
    kind = Flux2Pipeline if family == "flux2-dev" else Flux2KleinPipeline
    pipe = kind.from_pretrained(
        Path(base) if base is not None else path, dtype=options.dtype, device=options.device,
        variant=options.variant, transformer_file=path if base is not None else None,
        text_encoder_files=list(options.text_encoders))
    defaults = options.defaults  # defaults.json over the family's (model_defaults)
    name = path.name.removesuffix(".safetensors")  # as Forge names a file's model
    return Flux2Model(pipe, family=family, name=name, defaults=defaults, modules=pipe.modules)
