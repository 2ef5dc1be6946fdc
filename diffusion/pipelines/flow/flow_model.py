"""`FlowModel`: a FLUX.1 or SD3/3.5 pipeline behind the `generate(request)` every door calls
(the CLI, the server), as `StableDiffusion` is for the UNet models.

The "diffusers" sampler runs the pipeline's own loop (FluxPipeline / StableDiffusion3Pipeline
and their Img2Img / Inpaint forms: the batch's noise from one seed, diffusers' pictures with
`rng="torch"`); the WebUI's samplers defined for flow models (Euler, Euler a, DPM++ 2M) run
over the shifted "Simple" schedule with per-image seeds (diffusion.pipelines.flow.flow_sampling;
both passes are FlowModel's base, diffusion.pipelines.flow.flow_passes).
FLUX.1 dev takes its guidance from `distilled_cfg_scale` (Forge's "Distilled CFG Scale") and
runs at CFG 1; a CFG scale above 1 adds a negative-prompt pass (true CFG), as in Forge.
SD3/3.5 use CFG. The hires fix is Forge's for flow models (diffusion.pipelines.flow.flow_hires).
Prompts take `<lora:NAME:WEIGHT>` tags (kohya, diffusers/PEFT LoRAs of these families), prompt
editing (flow_schedule) and, on the T5 families, emphasis as Forge weighs it
(diffusion.text.flow_emphasis; BREAK is dropped there)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ...loaders.flow.text_encoder_file import module_stem
from ...models.step_cache import CacheSpec, StepCache
from ...sampling.kdiffusion import DIFFUSERS, SamplerOptions
from ...sampling.kdiffusion_pass import sampler_fields
from ...sampling.samplers.registry import lookup
from ...text.composable import refuse_composable
from ...text.prompts import extract_extra_networks
from ..contract import (
    Capabilities,
    Denoisers,
    GenerationResult,
    LoadOptions,
    Placement,
    SamplingDefaults,
)
from ..control import ControlUnit
from ..control_map import split_maps
from ..control_spec import unit_label
from ..finite import NonFiniteError, pictures_uint8
from ..generation import Denoised, PromptLoras, generate
from ..observer import Observer, Progress, StepCallback
from ..request import GenerationRequest
from ..sd.decode_ahead import begin_decode
from ..vae_float32 import float32_copy
from .flow_capabilities import flow_capabilities
from .flow_control import DIT_CONTROLNETS
from .flow_hires import run_hires, stage_control
from .flow_memory import MemoryLayout, MemoryModes
from .flow_passes import FlowModelPasses
from .flow_replay import lent_steps
from .flow_sampling import flow_seeds
from .flux1_memory import flow_layout
from .start import decode

__all__ = ["FLOW_DEFAULTS", "FlowModel", "LLMFlowModel"]

# What each family samples with when its folder has no defaults.json: Forge's presets for
# FLUX (Euler, Simple, CFG 1; schnell 4 steps), diffusers' pipeline defaults for SD3 (28 steps,
# CFG 7; the SD 3.5 cards suggest 3.5-4.5).
_FORGE = "Forge's preset: FLUX's guidance is --distilled-cfg-scale"
FLOW_DEFAULTS = {
    "flux-dev": SamplingDefaults(steps=20, sampler="Euler", cfg_scale=1.0, why=_FORGE),
    "flux-schnell": SamplingDefaults(steps=4, sampler="Euler", cfg_scale=1.0, why=_FORGE),
    "sd3": SamplingDefaults(steps=28, sampler="Euler", cfg_scale=7.0,
                            why="diffusers' SD3 settings"),
    "chroma": SamplingDefaults(steps=35, sampler="Euler", cfg_scale=5.0,  # ChromaPipeline's
                               why="diffusers' Chroma settings"),
}
class FlowModel(FlowModelPasses, MemoryModes):
    """A loaded FLUX.1 (`family` "flux-dev" or "flux-schnell"), SD3/3.5 ("sd3") or Chroma
    ("chroma") pipeline and its sampling `defaults`; `modules`: the stems of the separately
    given VAE / text encoder files, written into the infotext as Forge writes them
    ("Module 1: clip_l")."""

    diffusers_loras = True  # the prompt's LoRAs apply to every sampler
    latent_patch = 2  # latents per transformer token along a side (Bria FIBO's: 1)

    def __init__(self, pipe: Any, *, family: str, name: str = "model",
                 defaults: SamplingDefaults | None = None, modules: Sequence[str] = ()) -> None:
        self.pipe, self.family, self.name = pipe, family, name
        self.defaults = defaults or FLOW_DEFAULTS[family]
        self.modules = list(modules)
        self.lora_dir: str | os.PathLike[str] | None = None
        self.embeddings: Any = None
        self.vae_path: str | os.PathLike[str] | None = None
        self.loras = PromptLoras(self.lora_targets)

    @property
    def vae(self) -> Any:
        return self.pipe.vae

    @property
    def scheduler_config(self) -> dict[str, Any]:
        return dict(self.pipe.scheduler_config)

    @property
    def transformer(self) -> Any:
        return self.pipe.transformer

    @property
    def vae_scale_factor(self) -> int:
        return int(self.pipe.vae_scale_factor)

    @property
    def latent_scale(self) -> int:
        """How many pixels a side of one of the transformer's latents covers: the VAE's
        factor (FLUX.2's patchified latents: twice it)."""
        return self.vae_scale_factor

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.vae.config["latent_channels"])

    @property
    def native_size(self) -> int:
        """1024, the side FLUX.1 and SD3/3.5 were trained at (an SD3 config's sample_size
        says so too)."""
        size = self.pipe.transformer.config.get("sample_size")
        return int(size) * self.vae_scale_factor if size and self.family == "sd3" else 1024

    @property
    def distilled(self) -> bool:
        """Whether the model embeds its guidance (FLUX.1 dev)."""
        return bool(self.pipe.transformer.config.get("guidance_embeds"))

    @property
    def capabilities(self) -> Capabilities:
        """The family's (flow_capabilities), its transformer's config saying the guidance and
        a control map."""
        return flow_capabilities(self.family, self.pipe.transformer.config)

    @property
    def placement(self) -> Placement:
        weight = self.pipe.vae.decoder.conv_in.weight
        return Placement(weight.device, weight.dtype)

    @property
    def denoisers(self) -> Denoisers:
        return Denoisers((self.transformer,), "transformer")

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move (flux1_memory)."""
        return flow_layout(self.pipe)

    def use_float32_vae(self) -> bool:
        """Decode and encode with the VAE in float32 (diffusion.pipelines.vae_float32); False
        where it runs float32 already."""
        vae = float32_copy(self.pipe.vae)
        if vae is self.pipe.vae:
            return False
        self.replace_vae(self.pipe.vae, vae)  # the memory mode's unit follows
        self.pipe.vae = vae
        return True

    def use_vae(self, path: str | os.PathLike[str]) -> None:
        raise ValueError(f"--vae is not supported for {self.family} models yet; give the VAE "
                         "file (ae.safetensors) with --text-encoder")

    def generate(self, request: GenerationRequest | str | None = None, /, *,
                 observer: Observer | None = None, progress: Progress | None = None,
                 on_step: StepCallback | None = None, **settings: Any) -> GenerationResult:
        """Run `request` (txt2img, img2img or inpaint): the pictures, their seeds and the
        settings that made them, as `StableDiffusion.generate` (the sequence is
        diffusion.pipelines.generation's; this family's part follows)."""
        return generate(self, request, settings, observer=observer, progress=progress,
                        on_step=on_step)

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """Plain-text prompts (AND only with "diffusers", which reads it as a word); sides in
        whole 2x2 latent patches."""
        if request.sampler_label[0] != DIFFUSERS:
            refuse_composable(extract_extra_networks(request.prompt)[0],
                              f"{self.family} models")
        if (request.init_image is not None and request.initial_noise_multiplier != 1.0
                and request.sampler_label[0] == DIFFUSERS):
            raise ValueError("initial_noise_multiplier scales the noise the WebUI samplers lay "
                             "over the init image; with 'diffusers' leave it at 1, or pick "
                             "Euler")
        if (request.init_image is not None and request.resize_mode == 3
                and request.sampler_label[0] == DIFFUSERS):
            raise ValueError("resize mode 3 (latent upscale) resizes the latents the WebUI "
                             "samplers start from; 'diffusers' encodes the resized picture: "
                             "pick Euler, or resize mode 0-2")
        patch = self.latent_patch
        multiple = patch * self.vae_scale_factor
        unit = f"{patch}x{patch} patches of latents" if patch > 1 else "whole latents"
        for name, side in (("width", width), ("height", height)):
            if side % multiple:
                raise ValueError(f"{name} must be a multiple of {multiple} for {self.family} "
                                 f"models ({unit}), got {side}; try "
                                 f"{max(multiple, side // multiple * multiple)}")

    def denoise(self, request: GenerationRequest, seed: int, width: int, height: int,
                observer: Observer) -> Denoised:
        """Diffusers' loop, or a WebUI sampler over the Simple schedule (then the hires
        pass where asked); Forge's infotext fields."""
        label = request.sampler_label[0]
        batch = int(request.batch_size)
        prompts = [extract_extra_networks(request.prompt)[0]] * batch
        spec = CacheSpec.of(request.cache)
        cache = None if spec is None else StepCache(spec, int(request.steps))
        # FLUX Redux: the picture's tokens join every prompt's for this run; its networks and
        # the units' ControlNets placed by the memory mode while it runs (flow_memory)
        with self.guests(*_guests(request)):
            if request.redux is not None:
                self.pipe.prompt_prior = request.redux.prior()
            try:
                if label == DIFFUSERS:
                    latents = self._diffusers(request, prompts, seed, width, height, observer,
                                              cache)
                    seeds = [seed] * batch
                else:
                    image_seeds = flow_seeds(request, seed, batch)
                    seeds = image_seeds.seeds
                    first = request if request.hires is None else replace(
                        request, control=stage_control(request.control or (), "first"))
                    latents = self._webui(first, label, prompts, image_seeds, width, height,
                                          observer, cache)
                    if request.hires is not None:
                        latents = run_hires(self, request, prompts, image_seeds, latents,
                                            width, height, observer, cache=cache)
            finally:
                if request.redux is not None:
                    self.pipe.prompt_prior = None
        fields: dict[str, Any] = dict(
            scheduler=None if label == DIFFUSERS else "Simple",
            distilled_cfg_scale=float(request.distilled_cfg_scale) if self.distilled else None,
            seeds=seeds, clip_skip=0, modules=self.modules,
            cache=None if cache is None else cache.summary())
        if request.control:  # the units as the ControlNet extension writes them
            fields["controlnet"] = [unit_label(unit) for unit in request.control]
        if label != DIFFUSERS:
            fields.update(sampler_fields(
                lookup(label), request.sampler_options or SamplerOptions(), image_seeds))
            if request.seed_resize_from is not None:
                fields["seed_resize_from"] = tuple(request.seed_resize_from)
        if request.hires is not None and self.distilled:
            # Forge writes it where the model takes a distilled CFG
            fields["hires_distilled_cfg"] = float(request.hr_distilled_cfg)
        return Denoised(latents, seeds, fields)

    def decode(self, latents: np.ndarray, request: GenerationRequest) -> list[np.ndarray]:
        """The pictures, by the hires pass's VAE where its modules hold one (flow_hires)."""
        vae = getattr(request.hires_modules, "vae", None)
        vae = self.pipe.vae if vae is None else vae
        with lent_steps(self.pipe):  # the VAE takes the step captures' scratch (flow_replay)
            pictures = decode(vae, latents, vae.decoder.conv_in.weight.device,
                              self.memory_decode())
        return pictures_uint8(pictures, vae)

    def begin_decode(self, request: GenerationRequest, shape: tuple[int, ...]) -> None:
        """The VAE decoder's kernels begun before the transformer records its first step
        (diffusion.pipelines.sd.decode_ahead): on a device that builds in the background this
        family's decode runs once on latents of `shape`'s size under gpucore.begin_only, so the
        real decode finds its kernels built (a cold FLUX.1 dev process waited 2.6 s for them
        after its last step). In the plain mode without a hires pass (those decode in tiles or
        at another size); once per VAE and size."""
        if self.memory_mode is not None or request.hires is not None:
            return

        def dry_run(latents: np.ndarray) -> None:
            try:
                self.decode(latents, request)
            except NonFiniteError:  # nothing was computed: it read back what the pool held
                pass

        begin_decode(dry_run, self.pipe.vae, shape)

    def lora_targets(self) -> Any:
        """What the prompt's LoRAs patch: the transformer (kohya's BFL / Stability names,
        diffusers') and the CLIP text encoders."""
        pipe = self.pipe
        encoders = ({"text_encoder": pipe.clips[0][0], "text_encoder_2": pipe.clips[1][0]}
                    if self.family == "sd3" else {} if self.family == "chroma"  # T5: none
                    else {"text_encoder": pipe.text_encoder})
        return SimpleNamespace(unet=pipe.transformer, transformer=pipe.transformer, **encoders)


class LLMFlowModel(FlowModel):
    """A flow family whose text encoder is an LLM (Z-Image, Qwen-Image, FLUX.2): a --vae file
    replaces its VAE, the prompt's LoRAs patch its transformer alone, and its pipeline runs
    the CFG its `_guidance` asks for (FLUX.2's and the edit models' passes add references)."""

    def use_vae(self, path: str | os.PathLike[str]) -> None:
        """Decode with the VAE file at `path` (the pipeline's `use_vae_file`); the infotext
        names it as a module, as Forge's does."""
        self.pipe.use_vae_file(path)
        self.vae_path = path
        self.modules.append(module_stem(Path(path)))

    def lora_targets(self) -> Any:
        """What the prompt's LoRAs patch: the transformer (diffusers/PEFT's names, or the
        original layout's)."""
        return SimpleNamespace(unet=self.pipe.transformer, transformer=self.pipe.transformer)

    def _diffusers(self, request: GenerationRequest, prompts: list[str], seed: int,
                   width: int, height: int, observer: Observer,
                   cache: StepCache | None = None) -> np.ndarray:
        """The pipeline's own loop with `_guidance`'s keywords (its CFG inside), from the init
        image (and mask) where one is given: Z-Image's and Qwen-Image's Img2Img / Inpaint."""
        images = {} if request.init_image is None else {
            "image": request.init_image, "mask_image": request.mask,
            "strength": float(request.strength)}
        return self.pipe(prompts, height=height, width=width,  # type: ignore[no-any-return]
                         num_inference_steps=int(request.steps), seed=seed, rng=request.rng,
                         callback=observer.step, output_type="latent", cache=cache,
                         **self._guidance(request), **images)

    def guided_flow(self, request: GenerationRequest, prompts: list[str], width: int,
                    height: int, cache: StepCache | None = None
                    ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...],
                               float | None]:
        """The guided flow of `prompts` (the CFG inside the pipeline's velocity, with
        `_guidance`'s keywords), its latents' shape and the schedule's mu; `cache`: the
        generation's step cache (each pass a branch of it)."""
        return self.pipe.velocity(  # type: ignore[no-any-return]
            prompts, height=height, width=width, cache=cache, **self._guidance(request))


def _guests(request: GenerationRequest) -> tuple[list[Any], list[Any]]:
    """The networks a request brings (flow_memory's guests): its units' ControlNets made for
    the flow families, FLUX Redux's SigLIP and embedder."""
    controlnets = [unit.model for unit in split_maps(request.control or ())[1]
                   if isinstance(unit, ControlUnit) and isinstance(unit.model, DIT_CONTROLNETS)]
    redux = None if request.redux is None else request.redux.redux
    return controlnets, [] if redux is None else [redux.image_encoder, redux.image_embedder]


def flow_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a flow model samples with where its defaults.json says nothing: its family's
    (FLOW_DEFAULTS)."""
    return FLOW_DEFAULTS[family]


def load_flow_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                    ) -> FlowModel:
    """A FLUX / SD3 diffusers folder or single file as a FlowModel (`family` from
    diffusion.loaders.flow.file.flow_model_family), `options.text_encoders` files in place of
    the folder's (diffusion.loaders.flow.text_encoder_file) or what the file lacks (VAE too;
    diffusion.loaders.flow.file), `options.defaults` (the folder's defaults.json) over the
    family's. A `base` model is for UNet-only GGUFs: refused here."""
    if options.base is not None:
        raise ValueError(f"a base model (--base) is for UNet-only GGUFs; {family} models take "
                         "their missing parts from --text-encoder files")
    dtype, device, variant = options.dtype, options.device, options.variant
    text_encoders, defaults = options.text_encoders, options.defaults
    from .chroma import ChromaPipeline
    from .flux import FluxPipeline
    from .sd3 import StableDiffusion3Pipeline

    kind: Any = {"sd3": StableDiffusion3Pipeline, "chroma": ChromaPipeline}.get(family,
                                                                              FluxPipeline)
    # they take a str or a Path (anything else as an open file): another PathLike as a Path
    pipe = kind.from_pretrained(path if isinstance(path, (str, Path)) else Path(path),
                                dtype=dtype, device=device, variant=variant,
                                text_encoder_files=list(text_encoders), offload=options.offload)
    name = module_stem(Path(path))  # as Forge
    # defaults: defaults.json over the family's (model_defaults)
    return FlowModel(pipe, family=family, name=name, defaults=defaults, modules=pipe.modules)
