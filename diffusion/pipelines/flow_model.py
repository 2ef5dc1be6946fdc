"""`FlowModel`: a FLUX.1 or SD3/3.5 pipeline behind the `generate(request)` every door calls
(the CLI, the server), as `StableDiffusion` is for the UNet models.

The "diffusers" sampler runs the pipeline's own loop (FluxPipeline / StableDiffusion3Pipeline
and their Img2Img / Inpaint forms: the batch's noise from one seed, diffusers' pictures with
`rng="torch"`); the WebUI's samplers defined for flow models (Euler, Euler a, DPM++ 2M) run
over the shifted "Simple" schedule with per-image seeds (diffusion.pipelines.flow_sampling).
FLUX.1 dev takes its guidance from `distilled_cfg_scale` (Forge's "Distilled CFG Scale") and
runs at CFG 1; a CFG scale above 1 adds a negative-prompt pass (true CFG), as in Forge.
SD3/3.5 use CFG. The hires fix is Forge's for flow models (diffusion.pipelines.flow_hires).
Prompts are plain text (the WebUI's emphasis syntax is not parsed) apart
from `<lora:NAME:WEIGHT>` tags (kohya, diffusers/PEFT LoRAs of these families).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..lora import LORA_TAGS, LoraManager, lora_hashes, lora_uses
from ..noise.rng import make_generator
from ..samplers.registry import lookup
from ..text.composable import refuse_composable
from ..text.prompts import extract_extra_networks
from .contract import Capabilities, GenerationResult, Placement, SamplingDefaults
from .flow import decode, encode_image
from .flow_hires import run_hires
from .flow_sampling import FLOW_SAMPLERS, FLOW_SCHEDULES, flow_sigmas, sample_flow
from .inpaint_plan import InpaintPlan
from .masked_content import latent_content
from .observer import Observer, Progress, StepCallback, from_callbacks
from .prepare import latent_mask, to_unit_image
from .request import GenerationRequest, as_request, hires_fix
from .sampling import DIFFUSERS

__all__ = ["FLOW_DEFAULTS", "FlowModel"]

# What each family samples with when its folder has no defaults.json: Forge's presets for
# FLUX (Euler, Simple, CFG 1; schnell 4 steps), diffusers' pipeline defaults for SD3 (28 steps,
# CFG 7; the SD 3.5 cards suggest 3.5-4.5).
FLOW_DEFAULTS = {
    "flux-dev": SamplingDefaults(steps=20, sampler="Euler", cfg_scale=1.0),
    "flux-schnell": SamplingDefaults(steps=4, sampler="Euler", cfg_scale=1.0),
    "sd3": SamplingDefaults(steps=28, sampler="Euler", cfg_scale=7.0),
}


class FlowModel:
    """A loaded FLUX.1 (`family` "flux-dev" or "flux-schnell") or SD3/3.5 ("sd3") pipeline
    and its sampling `defaults`; `modules`: the stems of the separately given VAE / text
    encoder files, written into the infotext as Forge writes them ("Module 1: clip_l")."""

    # T5 tokens per prompt; None: the pipeline's (diffusers': FLUX 512, SD3 256)
    max_sequence_length: int | None = None

    def __init__(self, pipe: Any, *, family: str, name: str = "model",
                 defaults: SamplingDefaults | None = None, modules: Sequence[str] = ()) -> None:
        self.pipe, self.family, self.name = pipe, family, name
        self.defaults = defaults or FLOW_DEFAULTS[family]
        self.modules = list(modules)
        self.lora_dir: str | os.PathLike[str] | None = None
        self.embeddings: Any = None
        self.vae_path: str | os.PathLike[str] | None = None
        self._loras: LoraManager | None = None

    @property
    def vae(self) -> Any:
        return self.pipe.vae

    @property
    def transformer(self) -> Any:
        return self.pipe.transformer

    @property
    def vae_scale_factor(self) -> int:
        return int(self.pipe.vae_scale_factor)

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
        """The WebUI samplers defined for flow models over the Simple schedule, plain-text
        prompts with LoRA tags, the hires fix; no refiner, control units, variation seeds or
        memory modes yet."""
        guidance = ("cfg" if self.family == "sd3" else
                    "distilled" if self.distilled else "none")
        no = dict.fromkeys(("prompt_syntax", "textual_inversion", "refiner", "control",
                            "variation_seeds", "latent_upscale_resize", "hires_with_diffusers",
                            "latent_masked_content", "memory_modes"), False)
        return Capabilities(family=self.family, latent_space=self.family.split("-")[0],
                            guidance=guidance, samplers=tuple(FLOW_SAMPLERS),
                            schedules=FLOW_SCHEDULES, models="flow-matching models", **no)

    @property
    def placement(self) -> Placement:
        weight = self.pipe.vae.decoder.conv_in.weight
        return Placement(weight.device, weight.dtype)

    @property
    def memory_mode(self) -> None:
        return None

    def set_memory_mode(self, mode: Any) -> None:
        if mode:
            raise ValueError(f"--medvram, --lowvram and --max-vram are not supported for "
                             f"{self.family} models yet; leave them out")

    def use_vae(self, path: str | os.PathLike[str]) -> None:
        raise ValueError(f"--vae is not supported for {self.family} models yet; give the VAE "
                         "file (ae.safetensors) with --text-encoder")

    def generate(self, request: GenerationRequest | str | None = None, /, *,
                 observer: Observer | None = None, progress: Progress | None = None,
                 on_step: StepCallback | None = None, **settings: Any) -> GenerationResult:
        """Run `request` (txt2img, img2img or inpaint): the pictures, their seeds and the
        settings that made them, as `StableDiffusion.generate`."""
        # 1. the request, and what this family does not take
        request = as_request(request, settings)
        observer = from_callbacks(observer, progress, on_step)
        self.capabilities.refuse(request)
        prompt, networks = extract_extra_networks(request.prompt)
        if request.sampler_label[0] != DIFFUSERS:  # diffusers reads AND as a word
            refuse_composable(prompt, f"{self.family} models")
        loras = self._activate_loras(networks)
        seed = int(request.seed) if request.seed not in (None, -1) else int(
            np.random.default_rng().integers(2**32))
        width = int(request.width or self.native_size)
        height = int(request.height or self.native_size)
        multiple = 2 * self.vae_scale_factor  # 2x2 latent patches
        for name, side in (("width", width), ("height", height)):
            if side % multiple:
                raise ValueError(f"{name} must be a multiple of {multiple} for {self.family} "
                                 f"models (2x2 patches of latents), got {side}; try "
                                 f"{max(multiple, side // multiple * multiple)}")
        plan = InpaintPlan.make(request, width, height)  # blur, Only masked, masked content
        request = plan.request
        label = request.sampler_label[0]
        batch = int(request.batch_size)
        prompts = [prompt] * batch
        distilled = float(request.distilled_cfg_scale)
        # 2. denoising: diffusers' loop, or a WebUI sampler over the Simple schedule
        if label == DIFFUSERS:
            latents = self._diffusers(request, prompts, seed, width, height, observer)
            seeds = [seed] * batch
        else:
            seeds = [seed + k for k in range(batch)]
            latents = self._webui(request, label, prompts, seeds, width, height, observer)
            if request.hires is not None:
                latents = run_hires(self, request, label, prompts, seeds, latents, width,
                                    height, observer, _options(request, label))
        # 3. decode, 4. what made them (Forge's infotext)
        vae = getattr(request.hires_modules, "vae", None)  # the hires pass's (flow_hires)
        vae = self.pipe.vae if vae is None else vae
        pictures = decode(vae, latents, vae.decoder.conv_in.weight.device)
        images = [np.round(p * 255).astype(np.uint8) for p in pictures]
        images = plan.finish(images, overlay=label != DIFFUSERS)  # laid back, as Forge
        settings_out: dict[str, Any] = dict(
            mode=request.mode, prompt=request.prompt, negative_prompt=request.negative_prompt,
            steps=int(request.steps), sampler=label,
            scheduler=None if label == DIFFUSERS else "Simple",
            cfg_scale=float(request.cfg_scale),
            distilled_cfg_scale=distilled if self.distilled else None, seed=seed, seeds=seeds,
            width=width, height=height, batch_size=batch, clip_skip=0, model=self.name,
            rng=request.rng, modules=self.modules)
        if label != DIFFUSERS:
            settings_out.update(_sampler_fields(request, label))
        if request.init_image is not None:
            settings_out.update(strength=float(request.strength), **plan.settings)
        if request.hires is not None:
            settings_out.update(hires_fix(request.hires, request.hires_modules))
            if self.distilled:  # Forge writes it where the model takes a distilled CFG
                settings_out["hires_distilled_cfg"] = float(request.hr_distilled_cfg)
        if loras:
            settings_out["lora_hashes"] = loras
        return GenerationResult(images=images, seeds=seeds, settings=settings_out)

    def _activate_loras(self, networks: list[Any]) -> str | None:
        """Patch in exactly the LoRAs the prompt's tags name (kohya's BFL / Stability names,
        diffusers'), removing earlier ones; the infotext's "Lora hashes", None for none.
        Every sampler runs with them ("diffusers" too)."""
        wanted = [tag for tag in networks if tag.kind in LORA_TAGS]
        if wanted and self.lora_dir is None:
            raise ValueError(f"the prompt names <{wanted[0].kind}:{wanted[0].name}> but no LoRA "
                             "folder is set: pass --lora-dir DIR (model.lora_dir in Python)")
        if not wanted and self._loras is None:
            return None
        if self._loras is None:
            pipe = self.pipe
            encoders = ({"text_encoder": pipe.clips[0][0], "text_encoder_2": pipe.clips[1][0]}
                        if self.family == "sd3" else {"text_encoder": pipe.text_encoder})
            self._loras = LoraManager(SimpleNamespace(
                unet=pipe.transformer, transformer=pipe.transformer, **encoders))
        uses = lora_uses(wanted, self.lora_dir, load=self._loras.load) if wanted else []
        self._loras.set(uses)
        return lora_hashes(uses) or None

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """The pipeline's guidance keywords (FLUX's distilled scale, SD3's CFG), and the T5
        length where set."""
        length = ({} if self.max_sequence_length is None
                  else {"max_sequence_length": self.max_sequence_length})
        if self.family == "sd3":
            return {"guidance_scale": float(request.cfg_scale),
                    "negative_prompt": request.negative_prompt, **length}
        return {"guidance_scale": float(request.distilled_cfg_scale), **length}

    def _diffusers(self, request: GenerationRequest, prompts: list[str], seed: int,
                   width: int, height: int, observer: Observer) -> np.ndarray:
        if self.family != "sd3" and request.cfg_scale != 1:
            raise ValueError("FLUX with the 'diffusers' sampler runs without CFG (its guidance "
                             "is distilled_cfg_scale): set cfg_scale 1, or pick a WebUI sampler "
                             "for true CFG")
        images = {} if request.init_image is None else {
            "image": request.init_image, "mask_image": request.mask,
            "strength": float(request.strength)}
        return self.pipe(prompts, height=height, width=width,
                         num_inference_steps=int(request.steps), seed=seed, rng=request.rng,
                         callback=observer.step, output_type="latent",
                         **self._guidance(request), **images)

    def _flow(self, request: GenerationRequest, prompts: list[str], width: int,
              height: int) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...],
                                    float | None]:
        """The guided flow; FLUX with CFG above 1: the negative prompt's flow combined in."""
        size = {"height": height, "width": width}
        flow, shape, mu = self.pipe.velocity(prompts, **size, **self._guidance(request))
        cfg = float(request.cfg_scale)
        if self.family == "sd3" or cfg == 1:
            return flow, shape, mu
        negative, _, _ = self.pipe.velocity([request.negative_prompt] * len(prompts), **size,
                                            **self._guidance(request))

        def guided(x: np.ndarray, t: float) -> np.ndarray:
            uncond = negative(x, t)
            return uncond + np.float32(cfg) * (flow(x, t) - uncond)

        return guided, shape, mu

    def _webui(self, request: GenerationRequest, label: str, prompts: list[str],
               seeds: list[int], width: int, height: int, observer: Observer) -> np.ndarray:
        flow, shape, mu = self._flow(request, prompts, width, height)
        sigmas = flow_sigmas(int(request.steps), self.pipe.scheduler_config, mu)
        init = keep = None
        if request.init_image is not None:
            # the init image's latents drawn from the VAE's posterior with the first seed
            pixels = to_unit_image(request.init_image, width, height)
            generator = make_generator(request.rng, seeds[0])
            init = np.repeat(encode_image(self.pipe.vae, pixels, generator), shape[0], 0)
            if request.mask is not None:  # the WebUI's latent mask, its masked content
                small = latent_mask(request.mask, shape[2:], rounded=request.mask_round)
                first = seeds[0] if request.latent_noise_seed is None else (
                    request.latent_noise_seed)  # the job's first batch's latent noise
                init = latent_content(init, small, request.inpainting_fill, rng=request.rng,
                                      seeds=[first + k for k in range(len(seeds))])
                keep = 1.0 - small
        return sample_flow(flow, label, sigmas, seeds=seeds, rng=request.rng, shape=shape,
                           init_latents=init, keep=keep, strength=float(request.strength),
                           options=_options(request, label), callback=observer.step)


def _options(request: GenerationRequest, label: str) -> dict[str, Any]:
    """The sampler's settings from the request, those it takes (as the WebUI passes them:
    Euler's churn and noise scale, Euler a's eta and noise scale) and the eta noise seed
    delta (ENSD) where the sampler draws step noise."""
    info = lookup(label)
    options = request.sampler_options
    return {"eta_noise_seed_delta": int(request.eta_noise_seed_delta) if info.uses_ensd else 0,
            **({} if options is None else options.kwargs(info))}


def _sampler_fields(request: GenerationRequest, label: str) -> dict[str, Any]:
    """The infotext's sampler settings that applied and are not the defaults, and ENSD."""
    info = lookup(label)
    options = request.sampler_options
    fields: dict[str, Any] = {"sampler_fields": {} if options is None
                              else options.infotext(info)}
    if request.eta_noise_seed_delta and info.uses_ensd:
        fields["ensd"] = int(request.eta_noise_seed_delta)
    return fields


def with_defaults(model: FlowModel, defaults: SamplingDefaults) -> FlowModel:
    """`model` with the folder's defaults.json laid over its family's."""
    base = FLOW_DEFAULTS[model.family]
    model.defaults = replace(base, **{k: v for k, v in vars(defaults).items() if v is not None})
    return model


def load_flow_model(path: str | os.PathLike[str], family: str, *, dtype: Any, device: Any,
                    defaults: SamplingDefaults, variant: str | None = None,
                    text_encoders: Sequence[str | os.PathLike[str]] = ()) -> FlowModel:
    """A FLUX / SD3 diffusers folder or single file as a FlowModel (`family` from
    diffusion.loaders.flow.file.flow_model_family), `text_encoders` files in place of the
    folder's (diffusion.loaders.flow.text_encoder_file) or what the file lacks (VAE too;
    diffusion.loaders.flow.file), `defaults` (the folder's defaults.json) over the family's."""
    from pathlib import Path

    from .flux import FluxPipeline
    from .sd3 import StableDiffusion3Pipeline

    kind = StableDiffusion3Pipeline if family == "sd3" else FluxPipeline
    pipe = kind.from_pretrained(path, dtype=dtype, device=device, variant=variant,
                                text_encoder_files=list(text_encoders))
    name = Path(path).name.removesuffix(".safetensors").removesuffix(".gguf")  # as Forge
    model = FlowModel(pipe, family=family, name=name, modules=pipe.modules)
    return with_defaults(model, defaults)
