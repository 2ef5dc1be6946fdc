"""txt2img/img2img requests -> validated GenerationJobs (their results -> WebUI responses:
diffusion.server.api.response).

Seeds as the WebUI gives them: image k of a job (k counting over n_iter x batch_size) has seed
`seed + k`, and the server generates each image alone from its own seed, so every image is
reproduced by its infotext at batch size 1. (The pipeline itself draws a whole batch from one
seed; generating image by image is what makes the WebUI's per-image seeds hold.)
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from ...pipelines.hires_pass import check_hires_refiner_pass
from ...pipelines.request import GenerationRequest, check_size, door_fields
from ...sampling.kdiffusion import DIFFUSERS, SamplerOptions
from ...sampling.samplers import lookup, resolve, schedules
from ...text.emphasis_mode import check_emphasis
from ...upscalers.interpolation import HiresFix
from ..catalog.models_dir import ModelEntry, ModelRegistry
from ..catalog.modules_dir import (
    ModuleChoiceError,
    choose_hires_modules,
    choose_modules,
    choose_vae,
)
from ..images import PixelBudget, decode_image, prepare_mask
from ..jobs.worker import GenerationJob
from .schemas import Img2ImgRequest, Txt2ImgRequest

__all__ = ["SCHEDULERS", "RequestError", "build_job", "check_hires_modules", "check_modules",
           "check_randn_source", "check_vae", "fit_to_model", "resolve_sampler"]

T = TypeVar("T")
# the schedule types the server takes, as /sdapi/v1/schedulers lists them
SCHEDULERS = {schedule.name: schedule.label for schedule in schedules.SCHEDULE_TYPES}
# this server's limits on one job's images (the settings' own limits are GenerationRequest's)
LIMITS = {"batch_size": (1, 8), "n_iter": (1, 100)}
# the WebUI's "Random number generator source": CPU draws torch's CPU noise (rng="torch"),
# GPU and NV (CUDA noise, which no generator here reproduces) numpy's
RANDN_SOURCES = ("GPU", "CPU", "NV")


class RequestError(ValueError):
    """A request that cannot be run as sent; the message says what to change (HTTP 422)."""


def resolve_sampler(name: str | None, scheduler: str | None) -> tuple[str, str]:
    """(sampler label, schedule type label) for the WebUI's (sampler_name, scheduler) pair.

    Old combined names ("DPM++ 2M Karras") carry their schedule type, as in the WebUI;
    "diffusers" (any case) is the model folder's own scheduler, which every family runs (the
    schedule type then unused)."""
    try:
        schedule = schedules.lookup(scheduler or "automatic").label
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    if isinstance(name, str) and name.strip().lower() == DIFFUSERS:
        return DIFFUSERS, schedule
    try:
        return resolve(name or "Euler", schedule)
    except ValueError as exc:
        message = str(exc).replace("unknown sampler", "unknown sampler_name")
        raise RequestError(f"{message}; or 'diffusers' (the model folder's own scheduler)"
                           ) from None


def _check_range(name: str, value: int) -> None:
    low, high = LIMITS[name]
    if not low <= value <= high:
        raise RequestError(f"{name} must be between {low} and {high}, got {value}")


def _check_side(name: str, value: int | None, max_size: int) -> None:
    if value is None:
        return
    try:
        check_size(name, value)
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    if value > max_size:
        raise RequestError(f"{name} {value} is above this server's limit of {max_size} px "
                           "(--max-size)")


def _clip_skip(request: Txt2ImgRequest, options: dict[str, Any]) -> int:
    overrides = request.override_settings or {}
    value = overrides.get("CLIP_stop_at_last_layers", options["CLIP_stop_at_last_layers"])
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 12:
        raise RequestError("override_settings.CLIP_stop_at_last_layers must be a whole number "
                           f"from 1 to 12 (1 = the text encoder's last layer), got {value!r}")
    return value


def _option(request: Txt2ImgRequest, options: dict[str, Any], key: str, default: str,
            check: Callable[[Any], str]) -> str:
    """The WebUI option `key` (emphasis, hires_fix_refiner_pass): override_settings', else
    /options' (else `default`), as `check` accepts it (its ValueError a RequestError)."""
    try:
        return check((request.override_settings or {}).get(key, options.get(key, default)))
    except ValueError as error:
        raise RequestError(f"override_settings.{error}") from None


def _rng(request: Txt2ImgRequest, options: dict[str, Any]) -> str:
    source = (request.override_settings or {}).get("randn_source", options["randn_source"])
    named = check_randn_source(source, "override_settings.randn_source", any_case=True)
    return "torch" if named == "CPU" else "numpy"


def check_randn_source(value: Any, setting: str, *, any_case: bool = False) -> str:
    """The WebUI random number source `value` names (`any_case`: in upper or lower case), or
    RequestError."""
    named = str(value).upper() if any_case else value
    if named not in RANDN_SOURCES:
        raise RequestError(f"{setting} must be 'GPU', 'CPU' or 'NV', got {value!r}")
    return named


def named_checkpoint(registry: ModelRegistry, name: Any, setting: str) -> ModelEntry:
    """The model `name` (a title, name or hash as /sdapi/v1/sd-models lists them) of the
    server's, or RequestError naming `setting` and what the server has; for a single-file
    transformer without the diffusers folder it loads with (`ModelEntry.lacks`), which folder
    to add where."""
    entry = registry.find(name) if isinstance(name, str) else None
    if entry is None:
        raise RequestError(f"{setting} {name!r} is not one of this server's models: "
                           f"{', '.join(registry.titles())} (see /sdapi/v1/sd-models; POST "
                           "/sdapi/v1/refresh-checkpoints after adding one to --models-dir)")
    if entry.lacks is not None:
        raise RequestError(f"{setting} {name!r}: {entry.lacks}")
    return entry


def _refused(choose: Callable[..., T], *args: Any) -> T:
    """`choose(*args)`, a module choice; its ModuleChoiceError as a RequestError (the message
    says what to send)."""
    try:
        return choose(*args)
    except ModuleChoiceError as exc:
        raise RequestError(str(exc)) from None


def check_modules(value: Any, registry: ModelRegistry,
                  current: tuple[Path, ...] = ()) -> tuple[Path, ...]:
    """Forge's `forge_additional_modules` (VAE / text encoder files, by name or path) as a
    client sends it in /options or override_settings -> the files (modules_dir.choose_modules:
    `current` when it names the same ones); RequestError saying what to send otherwise."""
    return _refused(choose_modules, value, registry, current)


def check_vae(value: Any, registry: ModelRegistry, model: ModelEntry,
              setting: str = "sd_vae") -> Path | None:
    """The WebUI's `sd_vae` for `model` -> the VAE file (modules_dir.choose_vae; None: the
    model's own); RequestError naming `setting` and what to send otherwise."""
    return _refused(choose_vae, value, registry, model, setting)


def check_hires_modules(value: Any, registry: ModelRegistry
                        ) -> tuple[tuple[str, ...], tuple[Path, ...] | None]:
    """Forge's `hr_additional_modules` -> (infotext labels, files or None for the first
    pass's) (modules_dir.choose_hires_modules); RequestError saying what to send otherwise."""
    return _refused(choose_hires_modules, value, registry)


def _seed(value: int) -> int:
    return secrets.randbelow(4294967294) if value == -1 else value


# our setting -> the API's name for it, in the messages of GenerationRequest's checks
API_NAMES = {"strength": "denoising_strength", "sampler": "sampler_name",
             "seed resize": "seed_resize_from", "hires resize": "hr_resize"}


def _request(settings: dict[str, Any]) -> GenerationRequest:
    """GenerationRequest(**settings), its ValueError a RequestError naming the API's fields."""
    try:
        return GenerationRequest(**settings)
    except ValueError as exc:
        message = str(exc)
        for ours, theirs in API_NAMES.items():
            if message.startswith(ours + " "):
                message = theirs + message[len(ours):]
        raise RequestError(message) from None


def build_job(request: Txt2ImgRequest, kind: str, *, options: dict[str, Any], max_size: int,
              outputs: Path) -> tuple[GenerationJob, dict[str, Any]]:
    """A GenerationJob for `request`, or RequestError. Also returns the job's seed facts.

    The body maps onto a GenerationRequest, which checks every setting; the server adds its
    own limits (--max-size, images per job) and the WebUI's options (clip skip, RNG, ENSD,
    eta from override_settings)."""
    # 1. what costs nothing and refuses the most: the prompt's length, the server's limits
    settings: dict[str, Any] = dict(prompt=request.prompt,
                                    negative_prompt=request.negative_prompt or "")
    _request(settings)
    for name in ("batch_size", "n_iter"):
        _check_range(name, getattr(request, name))
    for name in ("width", "height"):
        _check_side(name, getattr(request, name), max_size)
    # 2. the sampler and the WebUI's options
    sampler, schedule = resolve_sampler(request.sampler_name or request.sampler_index,
                                        request.scheduler)
    settings.update(
        steps=request.steps, cfg_scale=request.cfg_scale, sampler=sampler, scheduler=schedule,
        width=request.width, height=request.height, seed=request.seed, subseed=request.subseed,
        subseed_strength=request.subseed_strength, clip_skip=_clip_skip(request, options) - 1,
        rng=_rng(request, options), eta_noise_seed_delta=_ensd(request, options),
        emphasis=_option(request, options, "emphasis", "Original", check_emphasis),
        hires_refiner_pass=_option(request, options, "hires_fix_refiner_pass", "second pass",
                                   check_hires_refiner_pass))
    # DDIM, PLMS, UniPC and "diffusers" take no options
    if sampler != DIFFUSERS and lookup(sampler).kind == "k-diffusion":
        settings["sampler_options"] = _sampler_options(request, options)
    if request.seed_resize_from_w > 0 and request.seed_resize_from_h > 0:
        settings["seed_resize_from"] = (request.seed_resize_from_w, request.seed_resize_from_h)
    if request.refiner_checkpoint not in (None, "", "None", "none"):  # the WebUI's "no refiner"
        settings["refiner"] = request.refiner_checkpoint  # a name: the app resolves it
    for setting in door_fields("api"):  # the settings that need no code here
        key = setting.metadata["api"]
        value = getattr(request, key, None) if key in type(request).model_fields else (
            request.model_extra or {}).get(key)
        if value is not None:
            settings[setting.name] = value
    # Sana's resolution binning (diffusers' name; on unless a request turns it off)
    binning = (request.override_settings or {}).get("use_resolution_binning")
    if binning is not None:
        settings["use_resolution_binning"] = binning
    # 3. the images (img2img) or the hires fix (txt2img)
    if isinstance(request, Img2ImgRequest):
        settings.update(_img2img_options(request))
    elif request.enable_hr:
        settings["hires"] = _hires(request, max_size)
    generation = _request(settings)
    # 4. the seeds: image k has seed + k, unless a variation seed varies them (then subseed + k)
    count = request.batch_size * request.n_iter
    seed, subseed = _seed(request.seed), _seed(request.subseed)
    seeds = [seed + (0 if request.subseed_strength else k) for k in range(count)]
    subseeds = [subseed + k for k in range(count)]
    try:  # the last image's request as the worker makes it, now: not after the first are drawn
        _request({**settings, "seed": seeds[-1], "subseed": subseeds[-1]})
    except RequestError as exc:
        raise RequestError(f"{exc} (the job's last image: seed and subseed + {count - 1}); send "
                           "a smaller seed, subseed or batch") from None
    job = GenerationJob(kind=kind, seeds=seeds, request=generation, subseeds=subseeds,
                        batch_size=request.batch_size,
                        save_to=outputs if request.save_images else None)
    return job, {"seed": seed, "subseed": subseed, "sampler": sampler, "scheduler": schedule,
                 "prompt": generation.prompt, "negative_prompt": generation.negative_prompt}


def _hires(request: Txt2ImgRequest, max_size: int) -> HiresFix:
    """The hires fix a txt2img request asks for (enable_hr with the hr_* fields); a size given
    on one side only keeps the first pass's aspect ratio, as in the WebUI."""
    resize = None
    x, y = request.hr_resize_x, request.hr_resize_y
    if x or y:
        width, height = request.width or 512, request.height or 512
        resize = (x or y * width // height, y or x * height // width)  # the WebUI floors
    strength = request.denoising_strength
    try:
        hires = HiresFix(scale=request.hr_scale, resize=resize,
                         upscaler=request.hr_upscaler or "Latent",
                         steps=request.hr_second_pass_steps,
                         denoise=0.7 if strength is None else strength,
                         prompt=request.hr_prompt or None,
                         negative_prompt=request.hr_negative_prompt or None,
                         sampler=_chosen(request.hr_sampler_name),
                         scheduler=_chosen(request.hr_scheduler))
        if request.width and request.height:
            for side in hires.target(request.width, request.height):
                _check_side("hires size", side, max_size)
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    return hires


def _chosen(name: str | None) -> str | None:
    """A hires sampler or schedule type as the WebUI's clients send it: None for the first
    pass's (None, "", "Use same sampler", "Use same scheduler")."""
    if name is None or name.strip() in ("", "Use same sampler", "Use same scheduler"):
        return None
    return name


def _sampler_options(request: Txt2ImgRequest, options: dict[str, Any]) -> SamplerOptions | None:
    """eta (the request's, else override_settings' eta_ancestral) and the sigma churn/noise
    settings; None when all are the WebUI's defaults."""
    overrides = {**options, **(request.override_settings or {})}
    eta = request.eta if request.eta is not None else overrides.get("eta_ancestral", 1.0)
    values = dict(eta=eta, s_churn=overrides.get("s_churn", 0.0),
                  s_tmin=overrides.get("s_tmin", 0.0),
                  s_tmax=overrides.get("s_tmax") or math.inf,
                  s_noise=overrides.get("s_noise", 1.0))
    try:
        chosen = SamplerOptions(**{k: float(v) for k, v in values.items()})
    except (TypeError, ValueError) as exc:
        raise RequestError(f"sampler settings: {exc}") from None
    return None if chosen == SamplerOptions() else chosen


def _ensd(request: Txt2ImgRequest, options: dict[str, Any]) -> int:
    value = (request.override_settings or {}).get("eta_noise_seed_delta",
                                                  options.get("eta_noise_seed_delta", 0))
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RequestError("eta_noise_seed_delta must be a whole number >= 0, got "
                           f"{value!r}")
    return value


def _img2img_options(request: Img2ImgRequest) -> dict[str, Any]:
    if not request.init_images:
        raise RequestError("init_images is empty; send at least one base64-encoded image")
    strength = request.denoising_strength
    strength = 0.75 if strength is None else strength
    if request.resize_mode not in (0, 1, 2, 3):
        raise RequestError(f"resize_mode must be 0 (resize), 1 (crop and resize), 2 (resize "
                           f"and fill) or 3 (latent upscale), got {request.resize_mode}")
    budget = PixelBudget()  # the init images and mask together
    image = decode_image(request.init_images[0], "init_images[0]", budget)
    # an edit model's further reference pictures (Forge Neo's mapping: the init images are
    # its references); a model that reads none refuses them (Capabilities.references)
    references = tuple(decode_image(picture, f"init_images[{k}]", budget)
                       for k, picture in enumerate(request.init_images[1:], 1))
    out: dict[str, Any] = {"init_image": image, "strength": strength,
                           "resize_mode": request.resize_mode, "references": references}
    # the WebUI's option, for one request in override_settings, where the field is not sent
    multiplier = (request.override_settings or {}).get("initial_noise_multiplier")
    if request.initial_noise_multiplier is None and multiplier is not None:
        out["initial_noise_multiplier"] = multiplier
    if request.mask:
        mask = decode_image(request.mask, "mask", budget)
        if mask.size != image.size:
            raise RequestError(f"mask is {mask.size[0]}x{mask.size[1]} but init_images[0] is "
                               f"{image.size[0]}x{image.size[1]}; send a mask of the image's "
                               "size")
        blur = request.mask_blur  # both sides where given (the WebUI's property setter)
        sides = (request.mask_blur_x, request.mask_blur_y) if blur is None else (blur, blur)
        out.update(mask=prepare_mask(mask, rounded=request.mask_round),
                   mask_invert=bool(request.inpainting_mask_invert),
                   mask_blur=tuple(max(side, 0) for side in sides),  # <= 0: none, as there
                   inpainting_fill=request.inpainting_fill)
    return out


def fit_to_model(request: GenerationRequest, native_size: int,
                 max_size: int | None = None) -> GenerationRequest:
    """Resolve the size (the loaded model's native size by default); runs on the worker, where
    the model is known. The pipeline fits the init image and mask to it by the request's
    resize mode once it has blurred the mask, or cuts the part around the mask out ("Only
    masked"), as the WebUI does (diffusion.pipelines.inpaint_plan).
    With `max_size` (--max-size), the size and the hires pass's size are held to it, now that
    they are known (RequestError)."""
    width, height = request.width or native_size, request.height or native_size
    if max_size is not None:
        hires = () if request.hires is None else request.hires.target(width, height)
        for name, side in (("width", width), ("height", height),
                           *(("hires size", side) for side in hires)):
            _check_side(name, side, max_size)
    return replace(request, width=width, height=height)
