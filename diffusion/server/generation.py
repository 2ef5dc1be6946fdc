"""txt2img/img2img requests -> validated GenerationJobs, and results -> WebUI responses.

Seeds as the WebUI gives them: image k of a job (k counting over n_iter x batch_size) has seed
`seed + k`, and the server generates each image alone from its own seed, so every image is
reproduced by its infotext at batch size 1. (The pipeline itself draws a whole batch from one
seed; generating image by image is what makes the WebUI's per-image seeds hold.)
"""

from __future__ import annotations

import json
import math
import secrets
from pathlib import Path
from typing import Any

from ..infotext import format_infotext
from ..pipelines.sampling import SamplerOptions
from ..samplers import lookup, resolve, schedules
from ..upscalers.interpolation import HiresFix
from .images import decode_image, encode_png, fit_image, prepare_mask
from .schemas import Img2ImgRequest, Txt2ImgRequest
from .worker import GenerationJob, JobResult

__all__ = ["SCHEDULERS", "RequestError", "build_job", "build_response",
           "resolve_sampler"]

# the schedule types the server takes, as /sdapi/v1/schedulers lists them
SCHEDULERS = {schedule.name: schedule.label for schedule in schedules.SCHEDULE_TYPES}
LIMITS = {"steps": (1, 150), "batch_size": (1, 8), "n_iter": (1, 100)}
MAX_IMAGES = 100


class RequestError(ValueError):
    """A request that cannot be run as sent; the message says what to change (HTTP 422)."""


def resolve_sampler(name: str | None, scheduler: str | None) -> tuple[str, str]:
    """(sampler label, schedule type label) for the WebUI's (sampler_name, scheduler) pair.

    Old combined names ("DPM++ 2M Karras") carry their schedule type, as in the WebUI."""
    try:
        schedule = schedules.lookup(scheduler or "automatic").label
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    try:
        return resolve(name or "Euler", schedule)
    except ValueError as exc:
        raise RequestError(str(exc).replace("unknown sampler", "unknown sampler_name")) from None


def _check_range(name: str, value: int) -> None:
    low, high = LIMITS[name]
    if not low <= value <= high:
        raise RequestError(f"{name} must be between {low} and {high}, got {value}")


def _check_side(name: str, value: int | None, max_size: int) -> None:
    if value is None:
        return
    if value < 8 or value % 8:
        lower = max(8, value // 8 * 8)
        raise RequestError(f"{name} must be a positive multiple of 8 (the VAE works on 8x8 "
                           f"pixel blocks), got {value}; try {lower} or {lower + 8}")
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


def _rng(request: Txt2ImgRequest, options: dict[str, Any]) -> str:
    source = (request.override_settings or {}).get("randn_source", options["randn_source"])
    return "torch" if str(source).upper() == "CPU" else "numpy"


def _seed(value: int) -> int:
    return secrets.randbelow(4294967294) if value == -1 else value


def build_job(request: Txt2ImgRequest, kind: str, *, options: dict[str, Any], max_size: int,
              outputs: Path) -> tuple[GenerationJob, dict[str, Any]]:
    """A GenerationJob for `request`, or RequestError. Also returns the job's seed facts."""
    for name in ("steps", "batch_size", "n_iter"):
        _check_range(name, getattr(request, name))
    _check_side("width", request.width, max_size)
    _check_side("height", request.height, max_size)
    if not math.isfinite(request.cfg_scale) or not 0 <= request.cfg_scale <= 100:
        raise RequestError(f"cfg_scale must be a finite number from 0 to 100, got "
                           f"{request.cfg_scale}")
    if request.seed < -1 or request.subseed < -1:
        raise RequestError("seed and subseed must be -1 (random) or >= 0")
    sampler, schedule = resolve_sampler(request.sampler_name or request.sampler_index,
                                        request.scheduler)
    strength = request.subseed_strength
    if not math.isfinite(strength) or not 0 <= strength <= 1:
        raise RequestError(f"subseed_strength must be from 0 to 1, got {strength}")
    count = request.batch_size * request.n_iter
    seed, subseed = _seed(request.seed), _seed(request.subseed)
    generate: dict[str, Any] = dict(
        prompt=request.prompt, negative_prompt=request.negative_prompt or "",
        steps=request.steps, cfg_scale=float(request.cfg_scale), sampler=sampler,
        scheduler=schedule, width=request.width, height=request.height,
        clip_skip=_clip_skip(request, options) - 1, rng=_rng(request, options),
        subseed_strength=float(strength), eta_noise_seed_delta=_ensd(request, options))
    k_diffusion = lookup(sampler).kind == "k-diffusion"  # DDIM, PLMS, UniPC take no options
    if k_diffusion and (options_ := _sampler_options(request, options)) is not None:
        generate["sampler_options"] = options_
    if request.seed_resize_from_w > 0 and request.seed_resize_from_h > 0:
        if not k_diffusion:
            raise RequestError(f"seed resize is not available with {sampler}; use a "
                               "k-diffusion sampler (Euler, DPM++ 2M, ...)")
        generate["seed_resize_from"] = (request.seed_resize_from_w, request.seed_resize_from_h)
    if request.refiner_checkpoint not in (None, "", "None", "none"):  # the WebUI's "no refiner"
        switch = 0.8 if request.refiner_switch_at is None else request.refiner_switch_at
        if not math.isfinite(switch) or not 0 < switch < 1:
            raise RequestError(f"refiner_switch_at must be between 0 and 1 (exclusive), e.g. "
                               f"0.8; got {switch}")
        generate.update(_refiner=request.refiner_checkpoint, refiner_switch_at=float(switch))
    if isinstance(request, Img2ImgRequest):
        generate.update(_img2img_options(request))
    elif request.enable_hr:
        generate["hires"] = _hires(request, max_size)
    # the WebUI: image k has seed + k, unless a variation seed varies them (then subseed + k)
    seeds = [seed + (0 if strength else k) for k in range(count)]
    job = GenerationJob(kind=kind, seeds=seeds, options=generate,
                        subseeds=[subseed + k for k in range(count)],
                        batch_size=request.batch_size,
                        save_to=outputs if request.save_images else None)
    return job, {"seed": seed, "subseed": subseed, "sampler": sampler, "scheduler": schedule}


def _hires(request: Txt2ImgRequest, max_size: int) -> HiresFix:
    """The hires fix a txt2img request asks for (enable_hr with the hr_* fields); a size given
    on one side only keeps the first pass's aspect ratio, as in the WebUI."""
    resize = None
    x, y = request.hr_resize_x, request.hr_resize_y
    if x or y:
        width, height = request.width or 512, request.height or 512
        resize = (x or round(y * width / height), y or round(x * height / width))
    strength = request.denoising_strength
    try:
        hires = HiresFix(scale=request.hr_scale, resize=resize,
                         upscaler=request.hr_upscaler or "Latent",
                         steps=request.hr_second_pass_steps,
                         denoise=0.7 if strength is None else strength)
        if request.width and request.height:
            for side in hires.target(request.width, request.height):
                _check_side("hires size", side, max_size)
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    return hires


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
    if not math.isfinite(strength) or not 0 < strength <= 1:
        raise RequestError(f"denoising_strength must be in (0, 1], got {strength}")
    if int(request.steps * strength) < 1:
        raise RequestError(f"denoising_strength {strength:g} with steps {request.steps} leaves "
                           "no step to run; raise one of them")
    if request.resize_mode not in (0, 1, 2, 3):
        raise RequestError(f"resize_mode must be 0 (resize), 1 (crop and resize), 2 (resize "
                           f"and fill) or 3 (latent upscale), got {request.resize_mode}")
    image = decode_image(request.init_images[0], "init_images[0]")
    out: dict[str, Any] = {"init_image": image, "strength": float(strength)}
    if request.mask:
        mask = decode_image(request.mask, "mask")
        if mask.size != image.size:
            raise RequestError(f"mask is {mask.size[0]}x{mask.size[1]} but init_images[0] is "
                               f"{image.size[0]}x{image.size[1]}; send a mask of the image's "
                               "size")
        blur = request.mask_blur
        out["mask"] = prepare_mask(mask, blur_x=request.mask_blur_x if blur is None else blur,
                                   blur_y=request.mask_blur_y if blur is None else blur,
                                   invert=bool(request.inpainting_mask_invert))
    out["_resize_mode"] = request.resize_mode
    return out


def fit_to_model(options: dict[str, Any], native_size: int) -> dict[str, Any]:
    """Resolve the size (the loaded model's native size by default) and fit the init image and
    mask to it with the request's resize mode; runs on the worker, where the model is known."""
    options = dict(options)
    mode = options.pop("_resize_mode", 0)
    width = options["width"] = options.get("width") or native_size
    height = options["height"] = options.get("height") or native_size
    if options.get("init_image") is not None:
        options["init_image"] = fit_image(options["init_image"], width, height, mode)
        if options.get("mask") is not None:
            options["mask"] = fit_image(options["mask"].convert("RGB"), width, height,
                                        mode).convert("L")
    return options


def build_response(request: Txt2ImgRequest, result: JobResult,
                   facts: dict[str, Any]) -> dict[str, Any]:
    """The WebUI's {images, parameters, info} for a finished job."""
    texts = [format_infotext(settings) for settings in result.settings]
    first = result.settings[0] if result.settings else {}
    count = len(result.settings)
    seeds = [int(s["seed"]) for s in result.settings]
    clip_skip = int(first.get("clip_skip", 0)) + 1 if first else None
    info = {
        "prompt": request.prompt, "all_prompts": [request.prompt] * count,
        "negative_prompt": request.negative_prompt or "",
        "all_negative_prompts": [request.negative_prompt or ""] * count,
        "seed": facts["seed"], "all_seeds": seeds, "subseed": facts["subseed"],
        "all_subseeds": [facts["subseed"] + k for k in range(count)],
        "subseed_strength": request.subseed_strength,
        "width": first.get("width", request.width), "height": first.get("height",
                                                                          request.height),
        "sampler_name": facts["sampler"], "scheduler": facts["scheduler"],
        "cfg_scale": request.cfg_scale,
        "steps": request.steps, "batch_size": request.batch_size, "n_iter": request.n_iter,
        "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": result.model.model_name if result.model else None,
        "sd_model_hash": result.model.hash if result.model else None,
        "sd_vae_name": None, "sd_vae_hash": None,
        "seed_resize_from_w": request.seed_resize_from_w,
        "seed_resize_from_h": request.seed_resize_from_h,
        "denoising_strength": first.get("strength", request.denoising_strength),
        "extra_generation_params": {}, "index_of_first_image": 0, "infotexts": texts,
        "styles": request.styles or [], "job_timestamp": result.job_timestamp,
        "clip_skip": clip_skip, "is_using_inpainting_conditioning": False,
        "interrupted": result.interrupted, "saved_paths": [str(p) for p in result.saved],
        "version": "avx-gpu",
    }
    parameters = request.model_dump()
    if isinstance(request, Img2ImgRequest) and not request.include_init_images:
        parameters["init_images"] = None
        parameters["mask"] = None
    images = [encode_png(image, text) for image, text in zip(result.images, texts, strict=True)]
    return {"images": images if request.send_images else [], "parameters": parameters,
            "info": json.dumps(info)}
