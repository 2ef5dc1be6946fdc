"""`txt2img`, `img2img`, `inpaint`: the options become one GenerationRequest, checked before
the model loads; then the model (and a refiner, a VAE, networks) loads (`load_models`) and
the batches run.

Everything that can be checked without the model (settings, sampler, defaults.json, images,
paths) is checked first: a bad input costs no model load.
"""

from __future__ import annotations

import argparse
import difflib
import secrets
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..imaging import eight_bit, see_through_picture
from ..infotext import save_images
from ..pipelines.control_spec import numpy_seed
from ..pipelines.request import GenerationRequest, door_fields
from ..sampling.kdiffusion import SamplerOptions, sampler_label
from ..sampling.samplers import schedules
from .before_load import given_guidance, refuse_before_load
from .control import build_control_specs, load_control_units
from .device import use_device_options
from .from_infotext import apply_infotext
from .ip_adapter import ip_adapter_units
from .load_models import load_models
from .memory import memory_line, memory_mode
from .options import SAMPLING_DEFAULTS, UPSCALERS
from .paths import check_writable
from .progress import ProgressBar
from .redux import redux_reference

__all__ = ["MAX_SIDE", "build_request", "run"]

# The largest image side the CLI draws (the server's is its --max-size): the WebUI's largest
# size setting (Extras' resize), far past what the models draw well. Without it a mistyped
# --width 100000 drew 4.7 GiB of float64 noise, then more, until the OS killed the process.
MAX_SIDE = 8192


def _open_image(path: str, what: str, mode: str | None) -> Any:
    """The picture at `path` in `mode`; None: RGB, or RGBA where it has transparency, as the
    server passes it on (Qwen-Image-Edit composites it over white; others read its RGB)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if mode is None:
                return see_through_picture(image, f"{what} {path!r}")
            return eight_bit(image).convert(mode)
    except FileNotFoundError:
        raise ValueError(f"{what} {path!r} does not exist") from None
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{what} {path!r} is not a readable image ({exc})") from None


def _fill_sampling_defaults(args: argparse.Namespace) -> None:
    """Set the sampling options left out: the model folder's defaults.json or a GGUF's copy
    (read without loading the model), then a Turbo model's
    (diffusion.pipelines.load.TURBO_DEFAULTS), else SAMPLING_DEFAULTS. Notes on stderr what
    came from where."""
    from ..pipelines.load import DEFAULT_MODEL, DEFAULTS_FILE, model_defaults

    model = DEFAULT_MODEL if args.model is None else Path(args.model)
    recommended, turbo = model_defaults(model)
    taken: dict[bool, list[str]] = {False: [], True: []}
    for name, fallback in SAMPLING_DEFAULTS.items():
        if getattr(args, name) is not None:
            continue  # given on the command line: it wins
        value = getattr(recommended, name)
        setattr(args, name, fallback if value is None else value)
        if value is not None:
            shown = repr(value) if isinstance(value, str) else f"{value:g}"
            taken[name in turbo].append(f"--{name.replace('_', '-')} {shown}")
    if taken[False]:
        source = model if model.suffix.lower() == ".gguf" else model / DEFAULTS_FILE
        print(f"from {source}: {', '.join(taken[False])}", file=sys.stderr)
    if taken[True]:
        why = f"{recommended.why}; " if recommended.why else ""
        print(f"{recommended.preset} model ({model.name}): {', '.join(taken[True])} ({why}"
              "give them to choose otherwise)", file=sys.stderr)


def _check_picture_suffix(out: Path) -> None:
    """--out x.jpg: else taken for a folder named x.jpg, holding PNGs."""
    from PIL import Image

    suffix = out.suffix.lower()
    if suffix != ".png" and suffix in Image.registered_extensions() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r}: pictures are written as PNG (with their settings "
                         "in it); name it .png, or give a folder")


def _check_paths(args: argparse.Namespace) -> None:
    """The files and folders named, before the model loads."""
    if args.model is not None and not Path(args.model).exists():
        raise ValueError(f"model path {args.model!r} does not exist; give a diffusers folder "
                         "(with model_index.json), a .safetensors checkpoint or a .gguf")
    if args.base and not Path(args.base).exists():
        raise ValueError(f"--base {args.base!r} does not exist; give the diffusers folder or "
                         "checkpoint whose parts a UNet-only .gguf model runs with")
    out = Path(args.out)
    _check_picture_suffix(out)
    folder = out.parent if out.suffix.lower() == ".png" else out
    if folder != out and out.is_dir():  # else found only after the generation
        raise ValueError(f"--out {args.out!r} is a folder; a .png --out names the file to "
                         f"write, e.g. {str(out / 'image.png')!r}")
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"--out {args.out!r}: {str(existing)!r} is a file; give a folder or "
                         "a .png path")
    if folder != out and existing != folder:
        raise ValueError(f"output folder {str(folder)!r} does not exist")
    check_writable(existing, f"--out {args.out!r}")
    if args.vae and not Path(args.vae).exists():
        raise ValueError(f"--vae {args.vae!r} does not exist; give a VAE folder or a "
                         ".safetensors file")
    if args.vae and args.model is not None:
        from ..pipelines.families import family_of

        entry, family = family_of(args.model)
        if entry.module_parts:  # refused before the model loads
            raise ValueError(f"--vae is not supported for {family} models yet; " + (
                "give the VAE file (ae.safetensors) with --text-encoder, as Forge's VAE / Text "
                "Encoder list" if Path(args.model).is_file() else "the model folder's vae/ is "
                "used"))
    if args.refiner and not Path(args.refiner).exists():
        raise ValueError(f"--refiner {args.refiner!r} does not exist; give the refiner's "
                         "diffusers folder or .safetensors file")
    for file in args.text_encoder or ():
        if not Path(file).is_file():
            raise ValueError(f"--text-encoder {file!r} is not a file; give a t5xxl / clip_l / "
                             "clip_g .safetensors file or a T5 .gguf file")
    for flag, folder in (("--lora-dir", args.lora_dir), ("--embeddings-dir", args.embeddings_dir)):
        if folder and not Path(folder).is_dir():  # before the GPU opens
            raise ValueError(f"{flag} {folder!r} is not a folder")
    if args.controlnet_dir and not Path(args.controlnet_dir).is_dir():
        raise ValueError(f"--controlnet-dir {args.controlnet_dir!r} is not a folder")
    if args.annotator_dir:
        from ..loaders.control.annotator_file import use_annotator_dir

        use_annotator_dir(args.annotator_dir)


def _hires(args: argparse.Namespace) -> Any:
    """The HiresFix --hr-* ask for, or None when neither --hr-scale nor --hr-resize is given."""
    if getattr(args, "hr_scale", None) is None and getattr(args, "hr_resize", None) is None:
        return None
    from ..upscalers.interpolation import HiresFix
    from ..upscalers.models import MODEL_UPSCALERS

    names = [*UPSCALERS, *MODEL_UPSCALERS]  # the model upscalers --upscaler-dir found
    by_lower = {u.lower(): u for u in names}
    wanted = args.hr_upscaler.strip().lower()
    if wanted not in by_lower:
        close = difflib.get_close_matches(wanted, by_lower, n=1)
        guess = f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
        where = ("" if getattr(args, "upscaler_dir", None) else
                 "; model upscalers are found with --upscaler-dir")
        raise ValueError(f"--hr-upscaler {args.hr_upscaler!r}{guess} is not one of: "
                         f"{', '.join(names)}{where}")
    # --hr-scale 0 is refused by HiresFix, not taken for "unset"
    scale = 2.0 if args.hr_scale is None else args.hr_scale
    return HiresFix(scale=scale, resize=args.hr_resize,
                    upscaler=by_lower[args.hr_upscaler.strip().lower()], steps=args.hr_steps,
                    denoise=args.hr_denoise, prompt=args.hr_prompt or None,
                    negative_prompt=args.hr_negative_prompt or None, sampler=args.hr_sampler,
                    scheduler=args.hr_scheduler)


def build_request(args: argparse.Namespace) -> GenerationRequest:
    """The GenerationRequest `args` ask for (seeds as given, -1 for random; no refiner
    model yet): ValueError with the request's message for a setting out of range."""
    images: dict[str, Any] = {}
    if args.command != "txt2img":
        images.update(init_image=_open_image(args.init_image, "--init-image", None),
                      strength=args.strength, resize_mode=args.resize_mode,
                      initial_noise_multiplier=args.initial_noise_multiplier,
                      references=tuple(_open_image(path, "--reference", None)
                                       for path in args.reference))
    if args.command == "inpaint":
        images.update(mask=_open_image(args.mask, "--mask", "L"), mask_invert=args.mask_invert,
                      mask_blur=args.mask_blur, inpainting_fill=args.inpainting_fill,
                      mask_round=args.mask_round,
                      inpaint_full_res=args.inpaint_full_res,
                      inpaint_full_res_padding=args.inpaint_full_res_padding)
    options = SamplerOptions(eta=args.eta, s_churn=args.s_churn, s_noise=args.s_noise)
    return GenerationRequest(
        prompt=args.prompt, negative_prompt=args.negative_prompt, steps=args.steps,
        cfg_scale=args.cfg_scale, sampler=sampler_label(args.sampler),
        scheduler=schedules.lookup(args.scheduler).label, seed=args.seed,
        subseed=args.subseed, subseed_strength=args.subseed_strength,
        seed_resize_from=args.seed_resize_from, eta_noise_seed_delta=args.ensd,
        width=args.width, height=args.height, batch_size=args.batch_size,
        clip_skip=args.clip_skip - 1, rng=args.rng, hires=_hires(args),
        # None when all are the WebUI's defaults (the timestep samplers take none)
        sampler_options=None if options == SamplerOptions() else options, **images,
        **{setting.name: getattr(args, setting.name) for setting in door_fields("cli")
           if getattr(args, setting.name) is not None})  # left out: the field's default


def _check_sides(request: GenerationRequest) -> None:
    """Every image side `request` draws, where known before the model loads, <= MAX_SIDE."""
    sides = {"--width": request.width, "--height": request.height}
    if request.seed_resize_from is not None:
        sides.update(zip(("--seed-resize-from width", "--seed-resize-from height"),
                         request.seed_resize_from, strict=True))
    if request.hires is not None and (request.hires.resize is not None or
                                      (request.width and request.height)):
        # without a resize, width and height are set (checked above)
        sides.update(zip(("hires fix width", "hires fix height"),
                         request.hires.target(request.width or 0, request.height or 0),
                         strict=True))
    for name, side in sides.items():
        if side is not None and side > MAX_SIDE:
            raise ValueError(f"{name} {side} is above the largest side drawn here, {MAX_SIDE} "
                             "px; models draw best near their own size (512 to 1024)")


def _apply_styles(args: argparse.Namespace) -> None:
    """--style's styles (of --styles-file, else ./styles.csv) applied to the prompts."""
    from ..text.styles import StyleDatabase

    if not args.styles_file and not Path("styles.csv").is_file():
        raise ValueError("--style needs --styles-file PATH (the WebUI's styles.csv); there is "
                         "no styles.csv in the current folder")
    styles = StyleDatabase(args.styles_file or ["styles.csv"])
    args.prompt, args.negative_prompt = styles.apply(args.prompt, args.negative_prompt,
                                                     args.style, "--style")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Path]:
    """Generate and save as `args` (from `parser`, diffusion.cli.main's) say; returns the
    written paths."""
    # 1. the settings: --from-infotext, the model's defaults.json, the seeds
    if getattr(args, "hr_scale", None) is not None and getattr(args, "hr_resize", None):
        # both given here (an infotext may hold both: its resize wins, as in the WebUI)
        raise ValueError("give --hr-scale or --hr-resize, not both: the second pass is "
                         "either a multiple of --width/--height or a size")
    guidance = given_guidance(args)  # a family without it refuses these, not the infotext's
    if args.from_infotext:
        apply_infotext(args, parser)
    if args.prompt is None:
        raise ValueError("--prompt is required (or --from-infotext with a PNG to start from)")
    if args.n_iter < 1:
        raise ValueError(f"--n-iter must be at least 1, got {args.n_iter}")
    _check_paths(args)
    if args.style:
        _apply_styles(args)
    if args.upscaler_dir:  # model upscalers' names, before --hr-upscaler is checked
        from ..upscalers.models import register_upscaler_dir

        register_upscaler_dir(args.upscaler_dir)
    _fill_sampling_defaults(args)
    if args.seed == -1:
        args.seed = secrets.randbelow(2**32)
    if args.subseed == -1:
        args.subseed = secrets.randbelow(2**32)
    # 2. the request and the control units, checked before anything loads
    request = build_request(args)
    _check_sides(request)
    specs = build_control_specs(args, _open_image)
    ip_units = ip_adapter_units(args)
    redux = redux_reference(args)
    # what the family does not take, told from its files (the weights load only after)
    refuse_before_load(args, request, specs, ip_units is not None, redux is not None, guidance)
    print(f"seed: {args.seed}", file=sys.stderr)  # the settings hold: a picture will follow
    # 3. the models
    use_device_options(args)
    import gpucore

    with gpucore.phase("load"):
        # the kernels this model used last time build in threads while it loads
        model = str(Path(args.model).resolve()) if args.model else "bundled"
        warmup = gpucore.Warmup(gpucore.default_device(),
                                f"{args.command} {model} {args.dtype}")
        pipe, refiner = load_models(args)
    for option in guidance:  # where only the load could tell the family
        pipe.capabilities.refuse_distilled_guidance(option)
    if specs:
        request = replace(request, control=load_control_units(
            specs, args.control_kinds, pipe, request.width or pipe.native_size,
            request.height or pipe.native_size, image_encoder=getattr(args, "image_encoder",
                                                                      None),
            seed=numpy_seed(request.seed, request.subseed)))
    if ip_units is not None:
        request = replace(request, control=tuple(request.control) + tuple(ip_units(pipe)))
    if redux is not None:
        request = replace(request, redux=redux(pipe))
    if args.int8 == "smooth":  # calibrated on one step of this request, float weights
        from ..pipelines.int8 import use_int8

        first = replace(request, steps=1, batch_size=1, seed=args.seed, hires=None)
        print(use_int8(pipe, calibration=lambda: pipe.generate(first)), file=sys.stderr)
    # 4. the WebUI's batch count: seeds count on over batches (with a variation seed the seed
    # stays and the variation seeds count on, as within a batch); "latent noise" stays the
    # first batch's, as the WebUI makes it once a job
    written = []
    for batch in range(args.n_iter):
        label = args.command if args.n_iter == 1 else f"{args.command} {batch + 1}/{args.n_iter}"
        step = batch * args.batch_size
        if args.verbose:
            device = gpucore.default_device()  # the one load_pipeline chose
            device.reset_peak_memory()
        seed = args.seed + (0 if request.subseed_strength else step)
        result = pipe.generate(replace(request, seed=seed, subseed=args.subseed + step,
                                       latent_noise_seed=args.seed, refiner=refiner),
                               observer=ProgressBar(label))
        with gpucore.phase("png"):
            written += save_images(result.images, result.settings, args.out,
                                   first=step if args.n_iter > 1 else None)
        if args.verbose:
            print(memory_line(device, memory_mode(args)), file=sys.stderr)
    warmup.save()
    return written
