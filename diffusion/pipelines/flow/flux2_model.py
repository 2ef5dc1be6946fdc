"""`Flux2Model`: FLUX.2 klein behind the `generate(request)` every door calls, the flow
family's `FlowModel` with klein's guidance, latent space and decode, and the registry's
loader and defaults for it.

The request's CFG scale is diffusers' `guidance_scale`: 1 is no guidance (what the
step-distilled klein 4B/9B run at), above 1 a negative-prompt pass combined as `neg + cfg *
(pos - neg)` (the undistilled klein base models; a distilled folder ignores it, as diffusers
does). The "diffusers" sampler runs Flux2KleinPipeline's own loop; the WebUI's samplers for
flow models run over the Simple schedule shifted by klein's mu of the size and step count, and
the hires fix with them (flow_hires: a latent upscaler upscales the patchified,
normalized latents as they are; an image upscaler's pictures are drawn from the FLUX.2 VAE's
posterior, patchified and normalized; the second pass's mu that of the stretched schedule;
FLUX.2 dev's second pass guided by `hr_distilled_cfg`, as FLUX.1 dev's).

img2img is FLUX.2's multi-reference editing, as Forge Neo maps img2img onto edit models: the
init image (fitted to width x height by the resize mode) and the request's further
`references` (each at its own size) are the reference pictures, in order, read as diffusers'
Flux2KleinPipeline reads its `image` list (`reference_picture`), and the prompt is the
instruction. The run starts from noise beside them: no denoising strength. The hires fix (not
with a mask) runs as on txt2img, the references steering both passes as FLUX.1 Kontext's
(kontext_model): the second pass's request keeps them, so its guided flow reads every one
as the first pass read it, unchanged (the init image fitted to width x height, not enlarged
to the hires size).

Inpainting (a mask) is diffusers' Flux2KleinInpaintPipeline: the init image is the picture
inpainted, noised by the request's denoising strength, its unmasked part put back after
every step, while the references stay as above (the init image, then the request's further
`references`: diffusers' `image_reference`). The mask goes the way of every flow family's
(mask blur, "Only masked", masked content; with the WebUI samplers the WebUI's latent mask:
diffusion.pipelines.flow.edit_refs.EditPasses); FLUX.2 dev inpaints the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...loaders.flow.text_encoder_file import module_stem
from ...loaders.flux2 import flux2_distilled, flux2_family
from ...models.step_cache import StepCache
from ...sampling.model_sampling import FlowSchedule
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..finite import pictures_uint8
from ..observer import Observer
from ..request import GenerationRequest
from .edit_refs import EditPasses, inpainting, reference_pictures, refuse_strength
from .flow_memory import MemoryLayout
from .flow_model import LLMFlowModel
from .flow_sampling import FLOW_SAMPLERS, FLOW_SCHEDULES
from .flux2_memory import flux2_layout
from .start import base_folder, encode_image

__all__ = ["FLUX2_BASE_DEFAULTS", "FLUX2_DEV_DEFAULTS", "FLUX2_KLEIN_DEFAULTS", "Flux2Model",
           "flux2_capabilities", "flux2_defaults", "load_flux2_model"]

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
MAX_REFERENCES = 10  # the reference pictures FLUX.2 reads at most (Black Forest Labs' figure)


class Flux2Model(EditPasses, LLMFlowModel):
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
        First Block Cache (MagCache's and TeaCache's tables are FLUX's), the memory modes
        (flux2_memory); up to MAX_REFERENCES reference pictures (the init image the first;
        with a mask the picture inpainted too); variation seeds and the hires fix (its own
        prompts and sampler too; on img2img beside the references) with the WebUI samplers;
        no refiner or control units yet."""
        return flux2_capabilities(self.family, distilled=self.pipe.distilled)

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move (flux2_memory)."""
        return flux2_layout(self.pipe)

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """FlowModel's checks; the init image a reference picture: no strength without a
        mask."""
        super().check(request, width, height)
        if self.dev and request.cfg_scale != 1:
            raise ValueError("FLUX.2 dev runs without CFG (its guidance is embedded: set it with "
                             "the Distilled CFG Scale); set cfg_scale 1")
        refuse_strength(request, "FLUX.2 klein models")

    @property
    def latent_scale(self) -> int:
        """16: a latent is a 2x2 patch of the VAE's latents, each 8 pixels a side."""
        return 2 * self.vae_scale_factor

    def schedule(self, shape: tuple[int, ...], steps: int, mu: float | None) -> FlowSchedule:
        """klein's schedule for a run of `steps` over latents of `shape`, shifted by its mu
        of the image tokens and of `steps`: for the hires pass the stretched schedule's
        count, as a run of that many steps shifts it (the pass runs its last steps), where
        `mu`, its guided flow's, counted the pass's own steps."""
        from .flux2 import empirical_mu

        return FlowSchedule(self.scheduler_config, mu=empirical_mu(shape[2] * shape[3], steps))

    def encode_init(self, pixels: np.ndarray, generator: Any) -> np.ndarray:
        """The latents (1, 4C, H/16, W/16) of `pixels` (1, 3, H, W) in [-1, 1], sides
        multiples of 16, as the transformer reads them: a draw from the FLUX.2 VAE's
        posterior (`encode_image`: its scale 1 and shift 0), patchified and normalized by
        its batch norm (`to_transformer`). diffusers' Flux2 pipelines encode references so
        (`_encode_vae_image`, `_patchify_latents`, the bn statistics) but to the posterior's
        mean; a start is drawn, as the other families' img2img draws it."""
        return self.pipe.vae.to_transformer(  # type: ignore[no-any-return]
            encode_image(self.pipe.vae, pixels, generator))

    def decode(self, latents: np.ndarray, request: GenerationRequest) -> list[np.ndarray]:
        """The pictures: the VAE's batch norm undone, unpatchified, decoded (in tiles where
        --max-vram asks: FlowMemoryPlan.decode)."""
        pictures = self.pipe.decode(latents, run=self.memory_decode())
        return pictures_uint8(pictures, self.pipe.vae)

    def _references(self, request: GenerationRequest) -> list[np.ndarray]:
        """The request's reference pictures (the init image, then its `references`) as
        FLUX.2 reads them (`reference_picture`); none for txt2img."""
        from .flux2 import reference_picture

        multiple = 2 * int(self.pipe.vae_scale_factor)
        return [reference_picture(p, multiple) for p in reference_pictures(request)]

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
                         image=self._references(request), **self._guidance(request),
                         **inpainting(request))

    def guided_flow(self, request: GenerationRequest, prompts: list[str], width: int,
                    height: int, cache: StepCache | None = None
                    ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...],
                               float | None]:
        """The guided flow of `prompts` (CFG inside Flux2KleinPipeline.velocity), its
        latents' shape and the schedule's mu; `cache`: the generation's step cache (each
        pass a branch of it)."""
        return self.pipe.velocity(  # type: ignore[no-any-return]
            prompts, height=height, width=width, num_inference_steps=int(request.steps),
            cache=cache, references=self._references(request), **self._guidance(request))


def flux2_capabilities(family: str, *, distilled: bool) -> Capabilities:
    """What a FLUX.2 model of `family` takes (Flux2Model.capabilities says what), `distilled`
    (klein's model_index.json or file name: flux2_distilled) its guidance: Flux2Model's, and
    the registry's before the weights load."""
    return Capabilities(family=family, latent_space="flux2",
                        guidance="distilled" if family == "flux2-dev" else
                        "none" if distilled else "cfg",
                        samplers=tuple(FLOW_SAMPLERS), schedules=FLOW_SCHEDULES,
                        models="FLUX.2 klein models", step_cache=("fbc",),
                        prompt_syntax=False,
                        textual_inversion=False, refiner=False, control=False,
                        latent_upscale_resize=False,
                        hires_with_diffusers=False, hires_own_settings=True,
                        latent_masked_content=False, memory_modes=True,
                        references=MAX_REFERENCES, hires_with_references=True)


def flux2_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a FLUX.2 klein model samples with where its defaults.json says nothing: the
    distilled cards' 4 steps at CFG 1 for a folder whose model_index.json says
    `is_distilled`, Flux2KleinPipeline's 50 steps at 4 else."""
    if family == "flux2-dev":
        return FLUX2_DEV_DEFAULTS
    return FLUX2_KLEIN_DEFAULTS if flux2_distilled(path) else FLUX2_BASE_DEFAULTS


def load_flux2_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                     ) -> Flux2Model:
    """A FLUX.2 diffusers folder, or a single-file transformer with `options.base` (a FLUX.2
    folder of the same model giving the text encoder, tokenizer, VAE and scheduler), as a
    Flux2Model; `options.text_encoders`: a text encoder file in place of the folder's (klein's
    Qwen3, dev's Mistral Small 3.1); `options.defaults` (the folder's defaults.json) over
    `flux2_defaults`."""
    from .flux2 import Flux2KleinPipeline
    from .flux2_dev import Flux2Pipeline

    path, base = Path(path), options.base
    model = "FLUX.2 dev" if family == "flux2-dev" else "FLUX.2 klein"
    folder, transformer_file = base_folder(path, base, model)
    if base is not None and (found := flux2_family(base)) not in (None, family):
        raise ValueError(f"{path.name} is a {model} transformer but the --base folder holds "
                         f"{'FLUX.2 dev' if found == 'flux2-dev' else 'FLUX.2 klein'}: give "
                         f"a {model} folder")
    kind = Flux2Pipeline if family == "flux2-dev" else Flux2KleinPipeline
    pipe = kind.from_pretrained(
        folder, dtype=options.dtype, device=options.device, variant=options.variant,
        transformer_file=transformer_file, text_encoder_files=list(options.text_encoders),
        offload=options.offload)
    defaults = options.defaults  # defaults.json over the family's (model_defaults)
    name = module_stem(path)  # as Forge names it
    return Flux2Model(pipe, family=family, name=name, defaults=defaults, modules=pipe.modules)
