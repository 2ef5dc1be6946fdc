"""`GenerationRequest`: every setting of one generation, checked once, for every caller.

Python callers, the CLI (`python -m diffusion txt2img`) and the server (`/sdapi/v1/txt2img`)
all build one of these; `StableDiffusion.generate(request)` runs it. Building it checks what
can be checked without a model, against the WebUI's limits (LIMITS), so a bad setting is
refused at once with one message whatever the door (the CLI prints it, the server answers
422 with it); the pipeline adds only what depends on the loaded model (an inpainting UNet
needs a mask, the refiner must fit the base model).

Adding a setting is a change in two files:
1. here: a field with its default, its check in `_check` (or `LIMITS`), and its metadata
   (`_setting`): the infotext label it is written under (the WebUI's name, e.g. "Denoising
   strength"), `cli` (help text: the CLI gets `--field-name`, typed by the default, through
   `diffusion.cli.options.add_request_options`) and `api` (the key of the WebUI API's body the
   server reads it from, `diffusion.server.api.generation.build_job`; a key the schema does not
   declare is read from the body's extra keys);
2. where it acts: `run_kdiffusion.py` / `run_scheduler.py` (or `stable_diffusion.py` for what
   it writes into the settings). `refiner_switch_at` is one such field.
The older settings predate this and are mapped by hand where a door spells them differently
(`--ensd`, `denoising_strength`, override_settings' `CLIP_stop_at_last_layers`, ...).

No device, no model: this module runs in milliseconds on any input (a 50 MB prompt is refused
by its length before any tokenizing).
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields, replace
from numbers import Integral, Real
from typing import Any

from ..models.step_cache import CacheSpec
from ..noise.rng import RNG_SOURCES
from ..sampling.kdiffusion import DIFFUSERS, SamplerOptions
from ..sampling.samplers import lookup, resolve
from ..text.emphasis_mode import check_emphasis
from ..upscalers.interpolation import HiresFix
from .hires_pass import check_hires_pass, check_hires_refiner_pass, hires_sampler
from .masked_content import masked_content
from .request_checks import number as _number
from .request_checks import whole as _whole
from .temporal_reasoning import DEFAULT_FRAMES, check_temporal_reasoning
from .temporal_reasoning import FIELDS as _REASONING

__all__ = ["LIMITS", "MAX_PROMPT_CHARS", "GenerationRequest", "as_request", "check_size",
           "door_fields", "infotext_labels"]

# The WebUI's ranges (its API's, which are wider than its sliders': 150 steps is the slider's
# end, not the API's). Steps stop at the models' 1000 training timesteps: the timestep
# schedulers (DDIM, PLMS, UniPC) cannot place more, and a k-diffusion schedule gains nothing.
LIMITS: dict[str, tuple[float, float]] = {
    "steps": (1, 1000), "batch_size": (1, 64), "clip_skip": (0, 11), "cfg_scale": (0, 100),
}
# A prompt longer than this is refused before it is tokenized. Real prompts are well under
# 5,000 characters; each character can be several tokens (bytes of an emoji), and the text
# encoder's activations grow with them: 2 MB of text asked the embedding kernel for more than a
# device's binding limit (DeviceLimitError after seconds), 50 MB for 26 GB of host memory.
MAX_PROMPT_CHARS = 20_000


def check_size(name: str, value: Any) -> int:
    """`value` as an image side: a positive multiple of 8 (the VAE's block). The one message
    for a bad size, whichever door it came through."""
    whole = isinstance(value, Integral) and not isinstance(value, bool)
    if not whole or value < 8 or value % 8:
        lower = max(8, int(value) // 8 * 8) if isinstance(value, (int, float)) else 512
        raise ValueError(f"{name} must be a positive multiple of 8 (the VAE works on 8x8 pixel "
                         f"blocks), got {value!r}; try {lower} or {lower + 8}")
    return int(value)


def _label(label: str | None, *, cli: str | None = None,
           api: str | None = None) -> dict[str, str | None]:
    """A field's metadata: its infotext label; `cli`: the help of the CLI option it gets;
    `api`: the server's body key it is read from."""
    return {"infotext": label, "cli": cli, "api": api}


@dataclass(frozen=True)
class GenerationRequest:
    """One generation's settings, checked when built (ValueError saying what to change).

    txt2img without `init_image`, img2img with it, inpaint with `init_image` and `mask` (white
    = repaint). `width`/`height` None: the model's native size; `seed` None or -1: a random one
    (`subseed` too).
    `sampler` is a WebUI or ComfyUI sampler name ("Euler a", "dpmpp_2m"; "DPM++ 2M Karras"
    carries its schedule type) or "diffusers" (the model folder's own scheduler, run as
    diffusers runs it); `scheduler` the WebUI's schedule type. `clip_skip` counts layers
    skipped (the WebUI's "Clip skip" minus 1). `rng`: "numpy", or "torch" for torch's CPU
    generator (the WebUI's "RNG: CPU"). `refiner`: a loaded model (the SDXL refiner) taking
    over at `refiner_switch_at`, or the name of one that the caller (the server) resolves.

    The equivalent in diffusers: the keyword arguments of `StableDiffusionPipeline.__call__`;
    in the WebUI: `StableDiffusionProcessingTxt2Img` / `...Img2Img`.
    """

    prompt: str = field(default="", metadata=_label(None))
    negative_prompt: str = field(default="", metadata=_label("Negative prompt"))
    steps: int = field(default=20, metadata=_label("Steps"))
    cfg_scale: float = field(default=7.0, metadata=_label("CFG scale"))
    sampler: str = field(default="Euler a", metadata=_label("Sampler"))
    scheduler: str = field(default="Automatic", metadata=_label("Schedule type"))
    seed: int | None = field(default=None, metadata=_label("Seed"))
    subseed: int | None = field(default=None, metadata=_label("Variation seed"))
    subseed_strength: float = field(default=0.0, metadata=_label("Variation seed strength"))
    seed_resize_from: tuple[int, int] | None = field(default=None,
                                                     metadata=_label("Seed resize from"))
    eta_noise_seed_delta: int = field(default=0, metadata=_label("ENSD"))
    width: int | None = field(default=None, metadata=_label("Size"))
    height: int | None = field(default=None, metadata=_label("Size"))
    batch_size: int = field(default=1, metadata=_label("Batch size"))
    clip_skip: int = field(default=0, metadata=_label("Clip skip"))
    rng: str = field(default="numpy", metadata=_label("RNG"))
    init_image: Any = field(default=None, metadata=_label(None))
    # an edit model's further reference pictures, after the init image (its first): FLUX.2
    # and Qwen-Image-Edit Plus read several (Capabilities.references); the infotext writes
    # their count with the init image's
    references: tuple[Any, ...] = field(default=(), metadata=_label("Reference images"))
    mask: Any = field(default=None, metadata=_label(None))
    strength: float = field(default=0.75, metadata=_label("Denoising strength"))
    # img2img / inpaint: the noise laid over the init latents times this (the WebUI's
    # initial_noise_multiplier, "Noise multiplier for img2img"); txt2img ignores it, as there
    # (the CLI's --initial-noise-multiplier is img2img's and inpaint's only)
    initial_noise_multiplier: float = field(default=1.0, metadata=_label(
        "Noise multiplier", api="initial_noise_multiplier"))
    # the WebUI's "Inpaint area: Only masked" (diffusion.pipelines.inpaint_area): with a mask,
    # only the part of the picture around it is drawn, at width x height, and pasted back; the
    # WebUI API's default is True, its page's (and ours) False
    inpaint_full_res: bool = field(default=False, metadata=_label(
        "Inpaint area", api="inpaint_full_res"))
    inpaint_full_res_padding: int = field(default=0, metadata=_label(
        "Masked area padding", api="inpaint_full_res_padding"))
    # the WebUI's "Mask blur" (diffusion.pipelines.mask_blur): the mask's Gaussian blur in
    # pixels of the mask as given, before anything else; (x, y) for the API's mask_blur_x and
    # mask_blur_y. The WebUI's page and API blur by 4; here 0: the mask as given
    mask_blur: int | tuple[int, int] = field(default=0, metadata=_label("Mask blur"))
    # the WebUI's "Mask mode: Inpaint not masked" (its inpainting_mask_invert): the mask
    # inverted before anything else, so its black part is repainted
    mask_invert: bool = field(default=False, metadata=_label("Mask mode"))
    # the WebUI's "Masked content" (diffusion.pipelines.masked_content): 0 fill, 1 original (as
    # the WebUI's page; its API's default is 0), 2 latent noise, 3 latent nothing
    inpainting_fill: int = field(default=1, metadata=_label("Masked content"))
    # img2img: how init_image and mask are fitted to width x height where their shape differs:
    # the WebUI's Resize mode, 0 just resize, 1 crop and resize, 2 resize and fill
    # (diffusion.imaging.fit_picture), 3 just resize (latent upscale: the picture
    # encoded at its own size, its latents resized; not with a mask, which the WebUI cannot
    # lay back over a picture of another size, unless inpaint_full_res finds it blank and
    # redraws the picture as img2img); not in the infotext, as in the WebUI
    resize_mode: int = field(default=0, metadata=_label(None))
    # the WebUI's mask_round (its API's, off in its soft inpainting): the latent mask and a
    # 9-channel UNet's mask rounded to 0 and 1; False keeps the blurred edge's levels
    mask_round: bool = field(default=True, metadata=_label(None, api="mask_round"))
    # the seed of the batch whose "latent noise" (inpainting_fill 2) is drawn: the WebUI fills
    # the init latents once a job, from its first batch's seeds, and every later batch of a
    # batch count (n_iter) repeats them; None: this request's seed. The CLI and server set it
    latent_noise_seed: int | None = field(default=None, metadata=_label(None))
    hires: HiresFix | None = field(default=None, metadata=_label("Hires upscale"))
    # Forge's hr_additional_modules as the second pass takes them (module_load.HiresModules),
    # written as "Hires Module 1", "Hires Module 2", ...
    hires_modules: Any = field(default=None, metadata=_label("Hires Module"))
    sampler_options: SamplerOptions | None = field(default=None, metadata=_label("Eta"))
    refiner: Any = field(default=None, metadata=_label("Refiner"))
    refiner_switch_at: float = field(default=0.8, metadata=_label(
        "Refiner switch at", api="refiner_switch_at",
        cli="fraction of the sampling after which the refiner runs, in (0, 1) (0.8; with "
            "--sampler diffusers: diffusers' denoising_end)"))
    # with the hires fix: the passes the refiner takes over in (hires_pass.HIRES_REFINER_PASSES)
    hires_refiner_pass: str = field(default="second pass", metadata=_label(
        "Hires refiner", cli="with --hr-scale and --refiner: the pass the refiner takes over "
        "in, 'first pass', 'second pass' (the WebUI's default) or 'both passes'"))
    # FLUX.1 dev's guidance embedding (Forge's "Distilled CFG Scale"); with it CFG stays 1
    distilled_cfg_scale: float = field(default=3.5, metadata=_label(
        "Distilled CFG Scale", api="distilled_cfg_scale",
        cli="FLUX.1 dev's distilled guidance, embedded in the model (3.5; Forge's 'Distilled "
            "CFG Scale'); leave --cfg-scale at 1 with it"))
    # its value in the hires fix's second pass (Forge's hr_distilled_cfg, with its default)
    hr_distilled_cfg: float = field(default=3.5, metadata=_label(
        "Hires Distilled CFG Scale", api="hr_distilled_cfg",
        cli="FLUX dev's distilled guidance (FLUX.1's, FLUX.2's) in the hires fix's second "
            "pass (3.5; Forge's 'Hires Distilled CFG Scale')"))
    # ControlNet / T2I-Adapter units (diffusion.pipelines.control.ControlUnit; the CLI and the
    # server build them from diffusion.pipelines.control_spec.ControlSpec), written to the
    # infotext as the extension writes them ("ControlNet N: ...")
    control: tuple[Any, ...] = field(default=(), metadata=_label("ControlNet"))
    # FLUX Redux's picture tokens after the prompt's (diffusion.pipelines.flow.redux.
    # ReduxReference), None: none
    redux: Any = field(default=None, metadata=_label(None))
    # step caching of the diffusion transformers (diffusion.models.step_cache): "fbc:0.12"
    # (First Block Cache), "magcache:0.06", "teacache:0.4" (FLUX), a kind alone: its default
    cache: str | None = field(default=None, metadata=_label(
        "Cache", api="cache",
        cli="step caching of the flow models, KIND[:THRESHOLD]: fbc (First Block Cache; 0.12), "
            "magcache (FLUX.1; 0.06), teacache (FLUX.1; 0.4) or none (the default). Skipped "
            "steps reuse the transformer's last residual: faster, a little less detail; "
            "higher thresholds skip more"))
    # the WebUI's "Tiling": every conv of the UNet and the VAE pads circularly (torch's
    # padding_mode="circular"), so the picture tiles seamlessly (SD 1.x/2.x, SDXL)
    tiling: bool = field(default=False, metadata=_label(
        "Tiling", api="tiling",
        cli="a picture that tiles seamlessly (the WebUI's Tiling: the UNet's and the VAE's "
            "convs wrap around the edges; SD 1.x/2.x and SDXL)"))
    # the WebUI's "Emphasis mode" (text.emphasis_mode): how (word:1.2) weighs the text states
    emphasis: str = field(default="Original", metadata=_label(
        "Emphasis", cli="how (word:1.2) weighs the prompt: Original (the default: weights, "
        "then the mean kept), 'No norm' (weights alone; Forge finds it better for SDXL), "
        "Ignore (brackets dropped, no weights), None (brackets read as text)"))
    # Sana, PixArt: drawn at the model's aspect-ratio bin nearest the size, resized back
    use_resolution_binning: bool = field(default=True, metadata=_label(None, cli=(
        "Sana, PixArt: draw at the model's aspect-ratio bin nearest the size asked, then resize "
        "and crop to it (diffusers' use_resolution_binning, its default)")))

    # ChronoEdit's temporal reasoning, as diffusers' ChronoEditPipeline names it (its help:
    # pipelines.temporal_reasoning)
    enable_temporal_reasoning: bool = field(default=False, metadata=_REASONING[0])
    num_temporal_reasoning_steps: int = field(default=0, metadata=_REASONING[1])
    num_frames: int = field(default=DEFAULT_FRAMES, metadata=_REASONING[2])

    def __post_init__(self) -> None:
        _check(self)

    @property
    def mode(self) -> str:
        """"txt2img", "img2img" or "inpaint", from the images given."""
        if self.init_image is None:
            return "txt2img"
        return "img2img" if self.mask is None else "inpaint"

    @property
    def uses_kdiffusion(self) -> bool:
        """Whether the sampler is one of the WebUI's k-diffusion samplers (per-image seeds,
        variation seeds, seed resize, eta/churn); else a timestep scheduler or "diffusers"."""
        return self.sampler != DIFFUSERS and lookup(self.sampler_label[0]).kind != "timestep"

    @property
    def sampler_label(self) -> tuple[str, str | None]:
        """(sampler label, schedule type label); ("diffusers", None) for "diffusers"."""
        if self.sampler == DIFFUSERS:
            return DIFFUSERS, None
        return resolve(self.sampler, self.scheduler)

    @property
    def hires_sampler_label(self) -> tuple[str, str | None]:
        """The hires pass's (sampler label, schedule type label): the hires fix's own where
        it names them, else the first pass's."""
        return self.sampler_label if self.hires is None else hires_sampler(
            self.hires, self.sampler_label)


def _check(r: GenerationRequest) -> None:
    """Every check that needs no model, cheapest first (the prompt's length before anything
    reads the prompt)."""
    for name in ("prompt", "negative_prompt"):
        text = getattr(r, name)
        if not isinstance(text, str):
            raise ValueError(f"{name} must be text, got {type(text).__name__}")
        if len(text) > MAX_PROMPT_CHARS:
            raise ValueError(f"{name} is {len(text):,} characters, over the limit of "
                             f"{MAX_PROMPT_CHARS:,} (MAX_PROMPT_CHARS); shorten it")
    for name in ("steps", "batch_size"):
        _whole(name, getattr(r, name), *LIMITS[name])
    check_temporal_reasoning(r)
    _whole("clip_skip (layers skipped: the WebUI's Clip skip minus 1)", r.clip_skip,
           *LIMITS["clip_skip"])
    _number("cfg_scale", r.cfg_scale, *LIMITS["cfg_scale"])
    _number("distilled_cfg_scale", r.distilled_cfg_scale, *LIMITS["cfg_scale"])
    _number("hr_distilled_cfg", r.hr_distilled_cfg, *LIMITS["cfg_scale"])
    for name in ("width", "height"):
        if getattr(r, name) is not None:
            check_size(name, getattr(r, name))
    for name in ("seed", "subseed"):
        value = getattr(r, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, Integral)
                                  or not -1 <= int(value) < 2**64):  # torch generator's
            raise ValueError(f"{name} must be -1 (random) or a whole number >= 0 (below "
                             f"2**64), got {value!r}")
    _whole("eta_noise_seed_delta", r.eta_noise_seed_delta, 0)
    if r.rng == "torch" and isinstance(r.seed, Integral) and r.seed >= 0 and \
            r.seed + r.eta_noise_seed_delta >= 2**64:  # the per-step noise's seed
        raise ValueError(f"seed + eta_noise_seed_delta is {r.seed + r.eta_noise_seed_delta}, "
                         "past torch's generator's range (below 2**64); send a smaller one")
    _number("subseed_strength", r.subseed_strength, 0, 1)
    _number("strength", r.strength, 0, 1, open_low=True)
    _number("initial_noise_multiplier", r.initial_noise_multiplier, 0, 10)
    CacheSpec.of(r.cache)
    switch = r.refiner_switch_at
    if isinstance(switch, bool) or not isinstance(switch, Real) or not 0 < switch < 1:
        raise ValueError("refiner_switch_at must be a fraction of the sampling between 0 and 1 "
                         f"(exclusive), e.g. 0.8; got {switch!r}")
    if r.rng not in RNG_SOURCES:
        raise ValueError(f"rng must be one of {list(RNG_SOURCES)}, got {r.rng!r}")
    for name, kind in (("sampler_options", SamplerOptions), ("hires", HiresFix)):
        value = getattr(r, name)
        if value is not None and not isinstance(value, kind):
            raise ValueError(f"{name} must be a {kind.__module__}.{kind.__name__} or None, got "
                             f"{type(value).__name__}")
    if r.seed_resize_from is not None:
        if not isinstance(r.seed_resize_from, (tuple, list)) or len(r.seed_resize_from) != 2:
            raise ValueError("seed_resize_from must be a (width, height) pair or None, got "
                             f"{r.seed_resize_from!r}")
        for name, side in zip(("seed resize width", "seed resize height"), r.seed_resize_from,
                              strict=True):
            check_size(name, side)
    if r.hires is not None and r.hires.resize is not None:
        for name, side in zip(("hires resize width", "hires resize height"), r.hires.resize,
                              strict=True):
            check_size(name, side)
    _whole("inpaint_full_res_padding (pixels around the mask)", r.inpaint_full_res_padding, 0)
    blur = r.mask_blur if isinstance(r.mask_blur, (tuple, list)) else (r.mask_blur,)
    if len(blur) not in (1, 2):
        raise ValueError(f"mask_blur must be a number of pixels or an (x, y) pair, got "
                         f"{r.mask_blur!r}")
    for side in blur:
        _whole("mask_blur (pixels)", side, 0)
    if isinstance(r.inpainting_fill, str):
        raise ValueError(f"inpainting_fill takes the number, got the name {r.inpainting_fill!r}"
                         ": diffusion.pipelines.masked_content.masked_content(name) gives it")
    masked_content(r.inpainting_fill)  # ValueError naming the four
    _whole("resize_mode (0 just resize, 1 crop and resize, 2 resize and fill, 3 just resize "
           "(latent upscale))", r.resize_mode, 0, 3)
    check_emphasis(r.emphasis)
    for name in ("inpaint_full_res", "mask_round", "mask_invert", "tiling",
                 "use_resolution_binning"):
        if not isinstance(getattr(r, name), bool):
            raise ValueError(f"{name} must be True or False, got {getattr(r, name)!r}")
    if r.latent_noise_seed is not None:
        _whole("latent_noise_seed", r.latent_noise_seed, 0)
    if not isinstance(r.references, tuple):
        raise ValueError(f"references must be a tuple of pictures, got "
                         f"{type(r.references).__name__}")
    if r.references and r.init_image is None:
        raise ValueError("further reference pictures need the init image, an edit model's "
                         "first reference: give it (--init-image, init_images[0])")
    if r.mask is not None and r.init_image is None:
        raise ValueError("inpainting needs an init image as well as a mask")
    if r.mode != "txt2img" and int(r.steps * r.strength) < 1:
        raise ValueError(f"strength {r.strength:g} with {r.steps} steps leaves no step to run; "
                         "raise strength or steps")
    if r.hires is not None and r.mask is not None:  # img2img: the family says (Capabilities)
        raise ValueError("hires fix is a txt2img option; to inpaint, raise the size instead")
    if r.hires_modules is not None and r.hires is None:
        raise ValueError("hires modules (Forge's hr_additional_modules) need the hires fix")
    check_hires_refiner_pass(r.hires_refiner_pass)
    label, _ = r.sampler_label  # an unknown sampler or schedule type: ValueError naming them
    if r.hires is not None and r.refiner is not None and label == DIFFUSERS:
        raise ValueError("the refiner with the hires fix runs with the WebUI's samplers "
                         "(Euler a, DPM++ 2M, DDIM, ...), not diffusers' own scheduler")
    if r.hires is not None and r.hires.own_settings:
        check_hires_pass(r.hires, r.sampler_label, max_chars=MAX_PROMPT_CHARS)
    if not r.uses_kdiffusion and (r.subseed_strength or r.seed_resize_from or
                                  r.sampler_options):
        raise ValueError("variation seeds, seed resize and sampler options (eta, churn) need a "
                         f"k-diffusion sampler; {label} draws the batch's noise from one seed, "
                         "as diffusers does")
    if r.hires is not None and not r.uses_kdiffusion:
        # run_scheduler's hires pass: the last int(total x denoise) of `total` timesteps (the
        # WebUI's DDIM/PLMS/UniPC run t_enc = steps - 1 of them, none at 1 hires step, and fail)
        steps, total = r.hires.schedule_steps(r.steps)
        if int(total * r.hires.denoise) < 1:
            which = "hires steps" if r.hires.steps else "steps (the hires pass's, hires steps 0)"
            raise ValueError(f"{which} {steps} at hires denoising strength "
                             f"{r.hires.denoise:g} leave {label} no step to run in the hires "
                             "pass; raise the hires steps or the denoising strength")


def door_fields(door: str) -> list[Field]:
    """The fields that `door` ("cli" or "api") takes without code of its own (step 1 of
    adding a setting, above)."""
    return [f for f in fields(GenerationRequest) if f.metadata.get(door)]


def infotext_labels() -> dict[str, str]:
    """Field -> the infotext label it is written under (fields without one left out)."""
    return {f.name: f.metadata["infotext"] for f in fields(GenerationRequest)
            if f.metadata.get("infotext")}


def as_request(request: GenerationRequest | str | None,
               settings: dict[str, Any]) -> GenerationRequest:
    """A pipeline's generate()'s first argument and keywords as one GenerationRequest."""
    known = {f.name for f in fields(GenerationRequest)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f"generate() got unknown settings {unknown}; the settings are "
                        f"GenerationRequest's fields: {', '.join(sorted(known))}")
    if isinstance(request, GenerationRequest):
        return replace(request, **settings) if settings else request
    if request is not None:
        settings = {**settings, "prompt": request}
    return GenerationRequest(**settings)
