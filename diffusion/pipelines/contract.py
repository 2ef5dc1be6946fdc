"""The contract every model family's pipeline keeps, and the only part of a pipeline that the
CLI, the server, its worker processes and Ray use.

    pipe = diffusion.load_pipeline(path)          # any family: a `Pipeline`
    pipe.capabilities.refuse(request)             # one line for what the family does not take
    result = pipe.generate(request, observer=o)   # pictures, seeds, the infotext's settings

A family says what it takes in `Capabilities` (so callers never ask which family a pipeline
is, and never look at its networks), its recommended sampling in `defaults`, its picture side
in `native_size`, and where its networks live in `placement` (control models, adapters and VAE
files load beside them).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..models.step_cache import CacheSpec
from .control_map import ControlMap
from .hires_pass import own_settings
from .picture_limits import PictureLimits
from .temporal_reasoning import reasoning_asked

__all__ = [
    "GUIDANCE_KINDS",
    "SAMPLING_SETTINGS",
    "Capabilities",
    "Denoisers",
    "GenerationResult",
    "LoadOptions",
    "Pipeline",
    "Placement",
    "SamplingDefaults",
]

GUIDANCE_KINDS = ("cfg", "distilled", "none")
"""How a family is guided when a request leaves `cfg_scale` out: "cfg", classifier-free
guidance at the request's scale (SD, SDXL, SD3); "distilled", a guidance scale embedded in the
model (`distilled_cfg_scale`, FLUX.1 dev) and CFG 1; "none", no guidance at all, CFG 1 (FLUX.1
schnell). A CFG scale above 1 still adds a negative-prompt pass on every family."""


@dataclass
class GenerationResult:
    """What `Pipeline.generate` returns."""

    images: list[np.ndarray]  # (H, W, 3) uint8 each
    seeds: list[int]
    settings: dict[str, Any]  # what produced them (for the PNG infotext)


@dataclass(frozen=True)
class SamplingDefaults:
    """The sampling settings a model recommends (its folder's `defaults.json`, read by
    `diffusion.pipelines.load.read_defaults`, over its family's); None where it recommends
    nothing."""

    steps: int | None = None
    sampler: str | None = None  # a WebUI sampler name as spelled in SAMPLERS
    cfg_scale: float | None = None
    # a family's preset: what to call it ("turbo", "flux-dev") and why these values, for the
    # note that says where a setting came from; not settings (equality ignores them)
    preset: str | None = field(default=None, compare=False)
    why: str | None = field(default=None, compare=False)

    def settings(self) -> dict[str, Any]:
        """The settings by name (SAMPLING_SETTINGS), None where it recommends nothing."""
        return {name: getattr(self, name) for name in SAMPLING_SETTINGS}


SAMPLING_SETTINGS = ("steps", "sampler", "cfg_scale")
"""The settings of SamplingDefaults (the keys a defaults.json may hold)."""


@dataclass(frozen=True)
class LoadOptions:
    """What `load_pipeline` was asked, as a family's loader gets it (diffusion.pipelines.
    families): the weights' `dtype` (numpy's), the `device`, the sampling `defaults` already
    read (defaults.json over the family's); a UNet model's `prediction_type` override, a
    diffusers folder's weight `variant` ("fp16"), module files (`text_encoders`: text encoders
    and VAEs) and a `base` model giving what a UNet-only GGUF lacks."""

    dtype: Any
    device: Any  # gpucore.Device
    defaults: SamplingDefaults
    prediction_type: str | None = None
    variant: str | None = None
    text_encoders: tuple[str | os.PathLike[str], ...] = ()
    base: str | os.PathLike[str] | None = None
    # a memory mode will be set: a family that can loads each network straight to host memory
    offload: bool = False


@dataclass(frozen=True)
class Placement:
    """Where a pipeline's networks live: the device, and the dtype of its denoiser's weights
    (numpy's float32 or float16)."""

    device: Any  # gpucore.Device
    dtype: Any


@dataclass(frozen=True)
class Denoisers:
    """A pipeline's networks that denoise (gpustd.nn.Modules: an SD / SDXL UNet, a flow
    transformer, Wan 2.2 A14B's two experts) and what messages call them ("UNet",
    "transformer"): what `--fp16-accumulation` changes and the NaN check names."""

    networks: tuple[Any, ...]
    called: str


@dataclass(frozen=True)
class Capabilities:
    """What a family takes. `refuse(request)` raises a one-line ValueError for anything else,
    before any work; the web page and the API read the same fields.

    `samplers`: the sampler labels it runs (None: every one of the WebUI's), "diffusers" (the
    model folder's own scheduler) always; `schedules`: the schedule types (None: every one);
    `latent_space`: models of one space continue each other's latents (a refiner);
    `guidance`: one of GUIDANCE_KINDS."""

    family: str
    latent_space: str
    guidance: str = "cfg"
    samplers: tuple[str, ...] | None = None
    schedules: tuple[str, ...] | None = None
    prompt_syntax: bool = True  # the WebUI's emphasis, prompt editing, BREAK and AND
    textual_inversion: bool = True
    refiner: bool = True  # hands over to, or takes over from, another model of its space
    control: bool = True  # ControlNet, T2I-Adapter and IP-Adapter units
    redux: bool = False  # a FLUX Redux reference picture (request.redux)
    control_map: bool = False  # needs a ControlMap among the units (FLUX.1 Canny / Depth dev)
    variation_seeds: bool = True  # variation seed and "seed resize from"
    latent_upscale_resize: bool = True  # img2img's resize mode 3 (latent upscale)
    hires: bool = True  # the hires fix at all
    hires_with_diffusers: bool = True  # the hires fix with the "diffusers" sampler
    hires_own_settings: bool = False  # the hires pass's own prompts and sampler (HiresFix)
    # the hires fix on img2img where the init image is a reference picture beside the noise
    # (an edit model's: FLUX.1 Kontext, Qwen-Image-Edit, FLUX.2, Qwen-Image 2.1), not the
    # start the WebUI's hires fix would have nothing to add to
    hires_with_references: bool = False
    noise_multiplier: bool = False  # img2img's initial_noise_multiplier other than 1
    latent_masked_content: bool = True  # latent noise / nothing with the "diffusers" sampler
    memory_modes: bool = True  # --medvram, --lowvram, --max-vram
    # under a memory mode it places its ControlNets itself, so they may load to host memory
    control_on_host: bool = False
    inpainting_model: bool = False  # a 9-channel UNet: needs an init image and a mask
    turbo: bool = False  # adversarially distilled: 1-4 steps without guidance
    step_cache: tuple[str, ...] = ()  # the step cache kinds it runs (models.step_cache)
    tiling: bool = False  # the WebUI's Tiling: convs that pad circularly (request.tiling)
    # the reference pictures an edit model reads, its init image the first (request.
    # references the others; with a mask the init image is also the picture inpainted, and
    # FLUX.1 Kontext's one further picture its reference): 0, none (the init image is
    # img2img's start), None, any number
    references: int | None = 0
    # the sizes of the condition pictures it reads (Z-Image Omni's: diffusers refuses others);
    # None: any
    picture_limits: PictureLimits | None = None
    models: str = ""  # what messages call the family's models ("" : "<family> models")
    # ChronoEdit's temporal reasoning (request.enable_temporal_reasoning and its settings)
    temporal_reasoning: bool = False

    def __post_init__(self) -> None:
        if self.guidance not in GUIDANCE_KINDS:
            raise ValueError(f"guidance must be one of {GUIDANCE_KINDS}, got {self.guidance!r}")

    @property
    def _name(self) -> str:
        return self.models or f"{self.family} models"

    def refuse(self, request: Any) -> None:
        """ValueError in one line for the first setting of `request` (a GenerationRequest)
        that this family does not take, saying what to do instead; nothing otherwise."""
        label, schedule = request.sampler_label
        diffusers = label == "diffusers"
        if self.inpainting_model and request.mask is None:
            raise ValueError("this is an inpainting model (9-channel UNet): give init_image "
                             "and mask")
        maps = sum(isinstance(unit, ControlMap) for unit in request.control or ())
        if self.control_map and not maps:
            needs = ("CogView4-6B-Control" if self.family == "cogview4"
                     else "FLUX.1 Canny / Depth dev")
            raise ValueError(f"{needs} needs its control map (the canny or depth map it "
                             "follows): give --control-image PATH (the server: a ControlNet "
                             "unit with model None)")
        if maps and not self.control_map:
            raise ValueError(f"a control map without a ControlNet model: {self._name} take "
                             "none in their input (FLUX.1 Canny / Depth dev and "
                             "CogView4-6B-Control do); give the unit a ControlNet model "
                             "(--controlnet PATH)")
        self._refuse_references(request)
        if self.picture_limits is not None:
            self.picture_limits.check_request(request, self._name)
        if (request.hires is not None and request.init_image is not None
                and not self.hires_with_references):
            raise ValueError("hires fix is a txt2img option; for img2img, raise the size "
                             "instead")
        unsupported = ((request.refiner is not None and not self.refiner, "a refiner"),
                       (request.hires is not None and not self.hires, "the hires fix"),
                       (maps < len(request.control or ()) and not self.control,
                        "ControlNet units"),
                       (request.redux is not None and not self.redux,
                        "a FLUX Redux reference (--redux)"),
                       (bool(request.subseed_strength) and not self.variation_seeds,
                        "variation seeds"),
                       (request.seed_resize_from is not None and not self.variation_seeds,
                        "seed resize"),
                       (request.resize_mode == 3 and not self.latent_upscale_resize,
                        "resize_mode 3 (latent upscale)"),
                       (request.hires is not None and not self.hires_own_settings
                        and bool(own_settings(request.hires, (request.prompt,
                                                              request.negative_prompt),
                                              request.sampler_label)),
                        "a hires prompt or sampler of its own (hr_prompt, hr_sampler_name)"),
                       (request.init_image is not None and not self.noise_multiplier
                        and request.initial_noise_multiplier != 1.0,
                        "initial_noise_multiplier other than 1"),
                       (request.tiling and not self.tiling,
                        "tiling (seamless pictures; SD 1.x/2.x and SDXL have it)"),
                       (not self.temporal_reasoning and reasoning_asked(request),
                        "temporal reasoning (ChronoEdit's: --enable-temporal-reasoning, "
                        "--num-temporal-reasoning-steps, --num-frames)"))
        for asked, what in unsupported:
            if asked:
                raise ValueError(f"{what}: not supported for {self._name} yet; leave it out")
        spec = CacheSpec.of(request.cache)
        if spec is not None:
            kind = spec.kind
            if kind not in self.step_cache:
                runs = (f"; it runs {' or '.join(self.step_cache)}" if self.step_cache
                        else "; leave --cache out")
                raise ValueError(f"step cache {kind}: not supported for {self._name}{runs}")
        if diffusers and request.hires is not None and not self.hires_with_diffusers:
            raise ValueError(f"the hires fix runs with the WebUI samplers "
                             f"({', '.join(self.samplers or ())}) on {self._name}, not "
                             "'diffusers'")
        if (diffusers and request.mask is not None and request.inpainting_fill in (2, 3)
                and not self.latent_masked_content):
            raise ValueError("masked content 'latent noise' / 'latent nothing' acts on the "
                             "latents the WebUI samplers start from; the 'diffusers' sampler "
                             "encodes the picture itself: pick Euler, or fill / original")
        if not diffusers and self.samplers is not None and label not in self.samplers:
            others = f"one of {', '.join(self.samplers)} or " if self.samplers else ""
            raise ValueError(f"sampler {label} is not defined for {self._name} here; choose "
                             f"{others}'diffusers'")
        if not diffusers and self.schedules is not None and schedule not in self.schedules:
            raise ValueError(f"schedule type {schedule} is not defined for {self._name} here; "
                             f"use {' or '.join(self.schedules)}")
        if request.hires is not None and not diffusers and request.hires.own_settings:
            label, schedule = request.hires_sampler_label  # the second pass's
            if self.samplers is not None and label not in self.samplers:
                raise ValueError(f"hires sampler {label} is not defined for {self._name} here; "
                                 f"choose one of {', '.join(self.samplers)}")
            if self.schedules is not None and schedule not in self.schedules:
                raise ValueError(f"hires schedule type {schedule} is not defined for "
                                 f"{self._name} here; use {' or '.join(self.schedules)}")

    def refuse_distilled_guidance(self, option: str) -> None:
        """ValueError in one line unless this family takes a distilled guidance scale
        (`guidance` "distilled": FLUX.1 dev's, FLUX.2 dev's), for `option`, a scale its caller
        was given explicitly (the CLI's --distilled-cfg-scale). Not part of `refuse`: Forge's
        clients send distilled_cfg_scale with every request, and the other families ignore
        it, as Forge does."""
        if self.guidance != "distilled":
            theirs = ("their guidance is the CFG scale" if self.guidance == "cfg" else
                      "they run unguided")
            raise ValueError(f"{option}: {self._name} take no distilled guidance (FLUX.1 and "
                             f"FLUX.2 dev's, embedded in the model); {theirs}: leave it out")

    def _refuse_references(self, request: Any) -> None:
        """More reference pictures than the family reads: one line saying how many it
        takes."""
        if not request.references:
            return
        given = 1 + len(request.references)
        if self.references == 0:
            raise ValueError(f"{given} pictures: {self._name} read one init image; further "
                             "reference pictures (--reference, init_images beyond the first) "
                             "are for edit models (FLUX.2, Qwen-Image-Edit Plus); give one")
        if self.references is not None and given > self.references:
            raise ValueError(f"{given} reference pictures: {self._name} read at most "
                             f"{self.references}; give {self.references}")


@runtime_checkable
class Pipeline(Protocol):
    """A loaded model of any family (`diffusion.load_pipeline`): all that its callers use."""

    name: str  # the checkpoint's name, as the infotext's "Model"
    family: str  # "sd1", "sd2", "sdxl", "sdxl-refiner", "flux-dev", "flux-schnell", "sd3"
    defaults: SamplingDefaults
    # where <lora:NAME:...> tags find NAME.safetensors (None: tags are refused, saying so)
    lora_dir: str | os.PathLike[str] | None
    # textual-inversion embeddings found by name in prompts (diffusion.text.embeddings)
    embeddings: Any

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def native_size(self) -> int:
        """The picture side the model was trained at: the default width and height."""
        ...

    @property
    def placement(self) -> Placement: ...

    @property
    def denoisers(self) -> Denoisers: ...

    def generate(self, request: Any = None, /, *, observer: Any = None,
                 progress: Callable[[int, int], Any] | None = None,
                 on_step: Callable[[int, int, np.ndarray], Any] | None = None,
                 **settings: Any) -> GenerationResult:
        """The pictures of `request` (a diffusion.pipelines.request.GenerationRequest, or
        a prompt and its settings as keywords)."""
        ...

    def set_memory_mode(self, mode: Any) -> None:
        """Run in the WebUI's --medvram / --lowvram / --max-vram mode (a
        diffusion.pipelines.sd.memory.MemoryMode; all off: every weight on the GPU); ValueError
        in one line where the family has no such mode."""
        ...

    @property
    def memory_mode(self) -> Any:
        """The MemoryMode `set_memory_mode` put in effect; None: every weight on the GPU."""
        ...

    def use_vae(self, path: str | os.PathLike[str]) -> None:
        """Decode (and encode) with the VAE file at `path` in place of the model's own; the
        infotext names it."""
        ...

    def use_float32_vae(self) -> bool:
        """Decode and encode with the VAE in float32 (--no-half-vae; generate does it where a
        float16 VAE gives NaN: diffusion.pipelines.vae_float32); False where it runs float32
        already."""
        ...
