"""`HunyuanImageModel`: HunyuanImage 2.1 (the base and the distilled checkpoints) behind the
`generate(request)` every door calls, the flow family's `FlowModel` running
HunyuanImagePipeline's own loop ("diffusers") or a WebUI sampler over the Simple schedule,
and the registry's detection, loader, defaults and capabilities for it.

The base checkpoint runs its folder's guider, or its OCR guider where a prompt quotes text,
as the folder has them at the default CFG scale (the plain guider's own); another CFG scale
replaces the CFG scale of the guider that runs (1: no negative pass), the folder saying the
rest (APG's scale, momentum and start step). The distilled checkpoint runs at CFG 1 with its
embedded guidance, the request's distilled CFG scale (diffusers' `distilled_guidance_scale`).
The WebUI's samplers that call the model once a step (Euler, Euler a, DPM++ 2M) run over the
Simple schedule, from noise or an init image (img2img, inpainting, the hires fix: the flow
family's passes, flow_passes and flow_hires, with HunyuanImage's 32x VAE); APG's step ranges
and momentum and meanflow's next timestep follow the run's steps, found from each call's
timestep. img2img and inpainting need a WebUI sampler (diffusers has no HunyuanImage pipeline
for them). Tencent's single transformer file runs with a HunyuanImage 2.1 folder as its
--base. The refiner folder (hunyuanimage_refiner_model) as `request.refiner` refines each
picture after the sampling, as Tencent runs the two: the base's picture decoded, then the
refiner's own steps and guidance on it from the picture's seed (told to the observer as a
pass of its own, previews by the refiner's VAE); the refiner's VAE decodes.
Not yet: step caches but First Block Cache, ControlNets.
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
from ...sampling.kdiffusion import DIFFUSERS, schedule_tail
from ...sampling.model_sampling import FlowSchedule
from ...text.composable import refuse_composable
from ...text.prompts import extract_extra_networks
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..generation import Denoised
from ..observer import Observer
from ..request import GenerationRequest
from .flow_memory import MemoryLayout
from .flow_model import LLMFlowModel
from .flow_sampling import FLOW_SCHEDULES
from .hunyuanimage_guidance import MixGuidance
from .hunyuanimage_refiner_model import REFINER_GUIDANCE, HunyuanImageRefinerModel
from .start import base_folder, decode

__all__ = ["HUNYUANIMAGE_DISTILLED_DEFAULTS", "HunyuanImageModel", "hunyuanimage_capabilities",
           "hunyuanimage_defaults", "load_hunyuanimage_model"]

# the WebUI samplers that call the model once a step, at the schedule's sigma: the step APG's
# momentum averages over and meanflow's next timestep are then the sampler's (Heun or DPM++ 2S
# would call it twice a step, updating the momentum twice and reading a wrong timestep_r)
HUNYUANIMAGE_SAMPLERS = ("Euler", "Euler a", "DPM++ 2M")

# the distilled checkpoint's: HunyuanImage 2.1's 8 steps, its guidance embedded (CFG 1)
HUNYUANIMAGE_DISTILLED_DEFAULTS = SamplingDefaults(
    steps=8, sampler=DIFFUSERS, cfg_scale=1.0,
    why="HunyuanImage 2.1 distilled's settings; its guidance is --distilled-cfg-scale")


class HunyuanImageModel(LLMFlowModel):
    """A loaded HunyuanImage 2.1 pipeline (`family` "hunyuanimage-2.1", a
    `HunyuanImagePipeline` as `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """The "diffusers" sampler and the WebUI samplers of one model call a step, the
        folder's guidance (CFG then APG; the distilled checkpoint's embedded scale),
        plain-text prompts, img2img and inpainting and the hires fix with the WebUI samplers,
        First Block Cache, the memory modes (flow_memory), the refiner after the sampling; no
        ControlNets."""
        return hunyuanimage_capabilities(self.family, distilled=self.distilled)

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: Qwen2.5-VL (its `hidden_states_of`) and ByT5 (its
        `forward`) as the text unit, the double and single blocks (the first's
        `modulated_input` for First Block Cache's probe), the VAE; the token refiner, the
        glyph projection and the embedders stay with the transformer's fixed parts (the
        transformer whole brought in by `prepare_text` too, the prompt's part of a run)."""
        pipe, transformer = self.pipe, self.pipe.transformer
        first = list(transformer.transformer_blocks)[:1]
        return MemoryLayout(transformer=transformer,
                            blocks=(transformer.transformer_blocks,
                                    transformer.single_transformer_blocks),
                            text_encoders=(pipe.text_encoder, pipe.text_encoder_2),
                            text_calls=((pipe.text_encoder, "hidden_states_of"),
                                        (pipe.text_encoder_2, "forward")),
                            vae=pipe.vae,
                            block_calls=tuple((block, "modulated_input") for block in first),
                            transformer_calls=("prepare_text",))

    @property
    def native_size(self) -> int:
        """2048, the side HunyuanImage 2.1 draws at (diffusers' default size)."""
        return 2048

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """Plain-text prompts with the WebUI samplers (AND only with "diffusers", which
        reads it as a word), an init image with them alone, sides in whole latents (32
        pixels), the distilled checkpoint at CFG 1; one line each otherwise."""
        if request.sampler_label[0] != DIFFUSERS:
            refuse_composable(extract_extra_networks(request.prompt)[0], "HunyuanImage 2.1 "
                              "models")
        elif request.init_image is not None:
            raise ValueError("img2img and inpainting run with the WebUI samplers on HunyuanImage "
                             "2.1 models (diffusers has no pipeline for them): pick Euler")
        if request.refiner is not None and not isinstance(request.refiner,
                                                          HunyuanImageRefinerModel):
            name = getattr(request.refiner, "name", request.refiner)
            raise ValueError(f"refiner {name!r} is not the HunyuanImage 2.1 refiner: give its "
                             "diffusers folder (HunyuanImageRefinerPipeline) as the refiner")
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
        """The pipeline's guided flow for the WebUI samplers over the run's sigmas
        (`_run_sigmas`), each call's step the one its timestep is on: what APG's ranges and
        momentum count (over the run's steps, as diffusers' img2img pipelines count theirs)
        and whose next sigma is meanflow's timestep_r; its latents' shape; no mu (a constant
        shift)."""
        sigmas = self._run_sigmas(request)
        flow, shape = self.pipe.velocity(prompts, height=height, width=width,
                                         steps=len(sigmas) - 1, cache=cache,
                                         **self._guidance(request))
        timesteps = sigmas * 1000

        def stepped(x: np.ndarray, t: float) -> np.ndarray:
            step = int(np.abs(timesteps[:-1] - t).argmin())
            if abs(timesteps[step] - t) > 1e-3:  # a guard: HUNYUANIMAGE_SAMPLERS never do
                raise ValueError(f"the sampler called HunyuanImage 2.1 at timestep {t:.3f}, "
                                 "between its steps; pick Euler")
            return flow(x, t, step, float(timesteps[step + 1]))

        return stepped, shape, None

    def _run_sigmas(self, request: GenerationRequest) -> np.ndarray:
        """The sigmas (then 0) a WebUI sampler runs `request` over: the Simple schedule of
        its steps (img2img: its tail by the strength), or in the hires pass (`guided_flow`
        called outside `_webui`) the last `steps` of the stretched schedule, as flow_hires
        cuts them."""
        steps, schedule = int(request.steps), FlowSchedule(self.pipe.scheduler_config)
        if request.hires is not None and not self._first_pass:
            total = request.hires.schedule_steps(steps)[1]
            return schedule_tail(schedule.get_sigmas(total), total, t_enc=steps - 1)
        strength = None if request.init_image is None else float(request.strength)
        return schedule_tail(schedule.get_sigmas(steps), steps, strength=strength)

    _first_pass = False  # within `_webui`: the first pass's flows, not the hires pass's

    def _webui(self, request: GenerationRequest, *args: Any, **kwargs: Any) -> np.ndarray:
        """FlowModelPasses' first pass, its flows told from the hires pass's."""
        self._first_pass = True
        try:
            return super()._webui(request, *args, **kwargs)
        finally:
            self._first_pass = False

    def denoise(self, request: GenerationRequest, seed: int, width: int, height: int,
                observer: Observer) -> Denoised:
        """The sampling (FlowModel's); with a refiner, each picture then refined: the
        refiner's VAE latents, which `decode` tells by their frame axis."""
        run = super().denoise(request, seed, width, height, observer)
        refiner = request.refiner
        if refiner is None:
            return run
        pictures = decode(self.pipe.vae, run.latents, self.pipe.vae.device,
                          self.memory_decode())
        prompt = extract_extra_networks(request.prompt)[0]
        steps = int(refiner.defaults.steps or 4)
        latents = refiner.refine(pictures, [prompt] * len(pictures), run.seeds, steps=steps,
                                 guidance=REFINER_GUIDANCE, rng=request.rng, observer=observer)
        return Denoised(latents, run.seeds, {**run.fields, "refiner": refiner.name})

    def decode(self, latents: np.ndarray, request: GenerationRequest) -> list[np.ndarray]:
        """The pictures of the transformer's latents, or of the refiner's VAE latents (B, 32,
        1, h, w) by the refiner's VAE."""
        if latents.ndim == 5 and request.refiner is not None:
            return request.refiner.decode(latents)  # type: ignore[no-any-return]
        return super().decode(latents, request)

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
                        guidance="distilled" if distilled else "cfg",
                        samplers=HUNYUANIMAGE_SAMPLERS, schedules=FLOW_SCHEDULES,
                        models="HunyuanImage 2.1 models", step_cache=("fbc",),
                        prompt_syntax=False, textual_inversion=False, refiner=True,
                        control=False, hires_with_diffusers=False,
                        latent_masked_content=False, hires_own_settings=True,
                        noise_multiplier=True)


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
