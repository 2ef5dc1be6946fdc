"""`HunyuanImageModel`: HunyuanImage 2.1 (the base and the distilled checkpoints) behind the
`generate(request)` every door calls, the flow family's `FlowModel` running
HunyuanImagePipeline's own loop ("diffusers") or Euler over the Simple schedule, and the
registry's detection, loader, defaults and capabilities for it.

The base checkpoint runs its folder's guider, or its OCR guider where a prompt quotes text,
as the folder has them at the default CFG scale (the plain guider's own); another CFG scale
replaces the CFG scale of the guider that runs (1: no negative pass), the folder saying the
rest (APG's scale, momentum and start step). The distilled checkpoint runs at CFG 1 with its
embedded guidance, the request's distilled CFG scale (diffusers' `distilled_guidance_scale`).
Of the WebUI's samplers Euler alone runs: its one model call a step is what APG's step ranges
and momentum and meanflow's next timestep follow. Not yet: img2img and inpainting (diffusers
has no HunyuanImage pipeline for them), the hires fix, the other WebUI samplers, the refiner
checkpoint, step caches but First Block Cache, ControlNets. Tencent's single transformer file
runs with a HunyuanImage 2.1 folder as its --base.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...loaders.errors import WeightsError
from ...loaders.flow.text_encoder_file import module_stem
from ...loaders.formats.diffusers_folder import read_json
from ...loaders.hunyuanimage import hunyuanimage_distilled
from ...models.step_cache import StepCache
from ...sampling.kdiffusion import DIFFUSERS
from ...sampling.model_sampling import FlowSchedule
from ...text.composable import refuse_composable
from ...text.prompts import extract_extra_networks
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..observer import Observer
from ..request import GenerationRequest
from .flow_memory import MemoryLayout
from .flow_model import LLMFlowModel
from .flow_sampling import FLOW_SCHEDULES
from .hunyuanimage_guidance import MixGuidance
from .start import base_folder

__all__ = ["HUNYUANIMAGE_DISTILLED_DEFAULTS", "HunyuanImageModel", "hunyuanimage_capabilities",
           "hunyuanimage_defaults", "load_hunyuanimage_model"]

# the distilled checkpoint's: HunyuanImage 2.1's 8 steps, its guidance embedded (CFG 1)
HUNYUANIMAGE_DISTILLED_DEFAULTS = SamplingDefaults(
    steps=8, sampler=DIFFUSERS, cfg_scale=1.0,
    why="HunyuanImage 2.1 distilled's settings; its guidance is --distilled-cfg-scale")


class HunyuanImageModel(LLMFlowModel):
    """A loaded HunyuanImage 2.1 pipeline (`family` "hunyuanimage-2.1", a
    `HunyuanImagePipeline` as `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """The "diffusers" sampler and Euler, the folder's guidance (CFG then APG; the
        distilled checkpoint's embedded scale), plain-text prompts, First Block Cache, the
        memory modes (flow_memory); nothing else yet."""
        return hunyuanimage_capabilities(self.family, distilled=self.distilled)

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: Qwen2.5-VL (its `hidden_states_of`) and ByT5 (its
        `forward`) as the text unit, the double and single blocks (the first's
        `modulated_input` for First Block Cache's probe), the VAE; the token refiner, the
        glyph projection and the embedders stay with the transformer's fixed parts."""
        pipe, transformer = self.pipe, self.pipe.transformer
        first = list(transformer.transformer_blocks)[:1]
        return MemoryLayout(transformer=transformer,
                            blocks=(transformer.transformer_blocks,
                                    transformer.single_transformer_blocks),
                            text_encoders=(pipe.text_encoder, pipe.text_encoder_2),
                            text_calls=((pipe.text_encoder, "hidden_states_of"),
                                        (pipe.text_encoder_2, "forward")),
                            vae=pipe.vae,
                            block_calls=tuple((block, "modulated_input") for block in first))

    @property
    def native_size(self) -> int:
        """2048, the side HunyuanImage 2.1 draws at (diffusers' default size)."""
        return 2048

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """txt2img alone, plain-text prompts with Euler (AND only with "diffusers", which
        reads it as a word), sides in whole latents (32 pixels), the distilled checkpoint at
        CFG 1; one line each otherwise."""
        if request.sampler_label[0] != DIFFUSERS:
            refuse_composable(extract_extra_networks(request.prompt)[0], "HunyuanImage 2.1 "
                              "models")
        if request.init_image is not None:
            raise ValueError("img2img and inpainting: not supported for HunyuanImage 2.1 models "
                             "yet (diffusers has no pipeline for them); use txt2img")
        if self.distilled and float(request.cfg_scale) != 1.0:
            raise ValueError("the distilled HunyuanImage 2.1 embeds its guidance: leave "
                             "--cfg-scale at 1 and set --distilled-cfg-scale")
        multiple = self.vae_scale_factor
        for name, side in (("width", width), ("height", height)):
            if side % multiple:
                raise ValueError(f"{name} must be a multiple of {multiple} for HunyuanImage 2.1 "
                                 f"models, got {side}; try "
                                 f"{max(multiple, side // multiple * multiple)}")

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """The distilled scale; or the negative prompt and a CFG scale for the guider that
        runs, none (each guider as the folder has it) at the plain guider's own."""
        if self.distilled:
            return {"distilled_guidance_scale": float(request.distilled_cfg_scale)}
        scale, guider = float(request.cfg_scale), self.pipe.guider
        own = guider is not None and scale == guider.guidance_scale
        return {"guidance_scale": None if own else scale,
                "negative_prompt": request.negative_prompt}

    def guided_flow(self, request: GenerationRequest, prompts: list[str], width: int,
                    height: int, cache: StepCache | None = None
                    ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...],
                               float | None]:
        """The pipeline's guided flow for Euler over the Simple schedule, whose one model
        call a step is the step APG's ranges and momentum count and whose next sigma is
        meanflow's timestep_r; its latents' shape; no mu (a constant shift)."""
        steps = int(request.steps)
        flow, shape = self.pipe.velocity(prompts, height=height, width=width, steps=steps,
                                         cache=cache, **self._guidance(request))
        sigmas = FlowSchedule(self.pipe.scheduler_config).get_sigmas(steps)
        done = 0

        def stepped(x: np.ndarray, t: float) -> np.ndarray:
            nonlocal done
            step, done = min(done, steps - 1), done + 1
            return flow(x, t, step, float(sigmas[step + 1]) * 1000)

        return stepped, shape, None

    def _diffusers(self, request: GenerationRequest, prompts: list[str], seed: int,
                   width: int, height: int, observer: Observer,
                   cache: StepCache | None = None) -> np.ndarray:
        """HunyuanImagePipeline's own loop (its prompt's and negative pass's calls each a
        branch of the step cache)."""
        return self.pipe(prompts, height=height, width=width,  # type: ignore[no-any-return]
                         num_inference_steps=int(request.steps), seed=seed, rng=request.rng,
                         callback=observer.step, output_type="latent", cache=cache,
                         **self._guidance(request))


def hunyuanimage_capabilities(family: str, *, distilled: bool = False) -> Capabilities:
    """What a HunyuanImage 2.1 model takes (HunyuanImageModel.capabilities says what): the
    loaded model's, and the registry's before the weights load."""
    return Capabilities(family=family, latent_space="hunyuanimage",
                        guidance="distilled" if distilled else "cfg", samplers=("Euler",),
                        schedules=FLOW_SCHEDULES, models="HunyuanImage 2.1 models",
                        step_cache=("fbc",),
                        prompt_syntax=False,
                        textual_inversion=False, refiner=False, control=False,
                        variation_seeds=False, latent_upscale_resize=False, hires=False,
                        hires_with_diffusers=False, latent_masked_content=False)


def hunyuanimage_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a HunyuanImage 2.1 model samples with where its defaults.json says nothing:
    HunyuanImagePipeline's 50 steps at its guider's CFG scale (3.5 where unreadable), or the
    distilled checkpoint's 8 at CFG 1."""
    if hunyuanimage_distilled(path):
        return HUNYUANIMAGE_DISTILLED_DEFAULTS
    try:
        scale = MixGuidance.from_config(
            read_json(Path(path) / "guider" / "guider_config.json")).guidance_scale
    except (WeightsError, ValueError, TypeError):
        scale = MixGuidance().guidance_scale
    return SamplingDefaults(steps=50, sampler=DIFFUSERS, cfg_scale=float(scale),
                            why="diffusers' HunyuanImage 2.1 settings (its guider's CFG scale)")


def load_hunyuanimage_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                            ) -> HunyuanImageModel:
    """A HunyuanImage 2.1 diffusers folder, or Tencent's single transformer file with
    `options.base` (a HunyuanImage 2.1 folder giving the rest), as a HunyuanImageModel;
    `options.defaults` (the folder's defaults.json) over `hunyuanimage_defaults`.
    --text-encoder is refused in one line."""
    from .hunyuanimage import HunyuanImagePipeline

    if options.text_encoders:
        raise ValueError("HunyuanImage 2.1 reads its text encoders from its diffusers folder: "
                         "leave --text-encoder out")
    path = Path(path)
    folder, transformer_file = base_folder(path, options.base, "HunyuanImage 2.1")
    pipe = HunyuanImagePipeline.from_pretrained(folder, dtype=options.dtype,
                                                device=options.device, variant=options.variant,
                                                transformer_file=transformer_file,
                                                offload=options.offload)
    return HunyuanImageModel(pipe, family=family, name=module_stem(path),
                             defaults=options.defaults,
                             modules=pipe.modules)
